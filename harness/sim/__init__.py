"""The built-in vLLM-like OpenAI-compatible server, the harness's default load target.

It runs in a process of its own (``harness sim`` or ``python -m harness.sim``) and
models vLLM's continuous batching, chunked prefill, KV-cache limits and preemption, so
that load tests, SLO checks and the canary gate can run without a GPU.
"""
