"""Collectors: what the server and the GPUs measured while the load ran.

Each collector turns its source (NVML, a ``/metrics`` page, Prometheus) into ``Point`` rows
(time series) and, for server counters and histograms, deltas over the measured window.
Importing this package imports nothing heavy: the NVML sampler needs only ``pynvml``.
"""
