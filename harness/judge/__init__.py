"""Judging a run: per-run metrics from raw records, confidence bounds and estimates,
steady-state and client-vs-server checks, the load generators' saturation, early-stop looks,
and the classification of every objective into a ``verdict.Verdict``. Pure: reads tables and
manifests, writes nothing."""
