"""Canary against baseline: two runs' per-request metrics compared with two-sample statistics
(Mann-Whitney U, Hodges-Lehmann shift, bootstrap p99 difference) into PROMOTE, HOLD or
ROLLBACK."""
