"""Human and CI renderings of a verdict: terminal table, summary.md, junit.xml, verdict.json."""
