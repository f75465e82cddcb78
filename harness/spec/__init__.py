"""What the user asked for: scenario, SLO policy, load shape, workload and collector
sections, parsed strictly from YAML into frozen models, plus the metric declarations and
quantities every later stage speaks in. Imports nothing of the harness but ``errors`` and the
simulator's settings model."""
