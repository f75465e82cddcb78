"""LLM serving SLO harness: load, measure, judge, gate."""

__version__ = "0.1.0"
