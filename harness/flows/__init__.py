"""One module per command, and the only place that strings stages together: spec -> load ->
records -> collectors -> judge -> canary -> report. ``harness.cli`` imports the flow of the
command it runs, and nothing else of the harness."""
