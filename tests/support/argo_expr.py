"""Argo Rollouts' reading of a metric's conditions on a Prometheus vector, for tests.

Argo (utils/evaluate EvaluateResult) marks a measurement Failed when the failure condition
holds, Successful when the success condition does, else Inconclusive. The conditions the
harness writes use a small part of Argo's expression language (``&&``, ``!``, ``len``,
``isNaN``, comparisons), which reads the same as Python once ``&&`` is ``and`` and ``!`` is
``not``, short-circuit included; anything else is refused rather than guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_ALLOWED = re.compile(r"[\w\s()\[\].<>=-]+")


def holds(condition: str, result: Sequence[float]) -> bool:
    text = condition.replace("&&", " and ").replace("!isNaN(", " not isNaN(")
    if not _ALLOWED.fullmatch(text):
        raise ValueError(f"not a condition this reader knows: {condition!r}")
    env = {"result": list(result), "len": len, "isNaN": math.isnan}
    return bool(eval(text, {"__builtins__": {}}, env))


def argo_outcome(metric: Mapping[str, Any], result: Sequence[float]) -> str:
    """Failed, Successful or Inconclusive, as Argo decides a measurement of ``metric``."""
    if holds(metric["failureCondition"], result):
        return "Failed"
    return "Successful" if holds(metric["successCondition"], result) else "Inconclusive"
