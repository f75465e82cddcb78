"""The vLLM tuning study: engine settings launched one at a time, measured, and ranked."""
