"""How far the harness's word counts are from the server's token counts.

Prompts are planned in words (no tokenizer here); the server's `usage.prompt_tokens` says
what they cost. The ratio tells whether "256-token prompts" really were, and includes the
chat template's own tokens, so it runs above 1 for short chat prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt


class TokenCalibration(TypedDict):
    """Ratio actual / planned prompt tokens over the requests that reported usage."""

    n: int  # requests with both a planned length above 0 and a usage count
    mean_ratio: float | None  # None when n is 0
    p5_ratio: float | None
    p95_ratio: float | None


_Values = npt.ArrayLike | Sequence[float | None]


def token_calibration(planned: _Values, actual_usage: _Values) -> TokenCalibration:
    """Summarise actual / planned per request; missing usage (None or NaN) is left out."""
    plan = np.asarray(planned, dtype=np.float64)
    actual = np.asarray(actual_usage, dtype=np.float64)
    if plan.shape != actual.shape or plan.ndim != 1:
        raise ValueError(
            f"expected two 1-D arrays of the same length, got {plan.shape} and {actual.shape}"
        )
    keep = np.isfinite(plan) & np.isfinite(actual) & (plan > 0)
    ratio = actual[keep] / plan[keep]
    if ratio.size == 0:
        return TokenCalibration(n=0, mean_ratio=None, p5_ratio=None, p95_ratio=None)
    p5, p95 = np.percentile(ratio, [5.0, 95.0])
    return TokenCalibration(
        n=int(ratio.size), mean_ratio=float(ratio.mean()), p5_ratio=float(p5), p95_ratio=float(p95)
    )
