"""The contract between the load and everything after it: the frozen per-request record, the
on-disk record log (JSON lines while the run goes, Parquet after), and the run folder with its
versioned manifest and timeline. Written by the load stage, read by collectors, judge and
reports."""
