"""Renderings of verdicts and comparisons: terminal table, summary.md, junit.xml,
comparison.md, and the Prometheus alerting rules written from a policy."""
