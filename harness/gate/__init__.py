"""The canary gate: drive a KServe InferenceService (or a LiteLLM route) through traffic
steps, judge each step against the policy and the baseline, and promote, hold or roll back."""
