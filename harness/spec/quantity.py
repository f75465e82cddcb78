"""Numbers with units as people write them in SLO files: "500ms", "2s", "0.1%", "60%"."""

from __future__ import annotations

import math
import re
from typing import Literal

Dimension = Literal[
    "seconds",
    "ratio",
    "per_second",
    "count",
    "tokens",
    "bytes",
    "watts",
    "celsius",
    "hertz",
    "joules",
]

_PATTERN = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z%/]*)\s*$")

_SCALE: dict[Dimension, dict[str, float]] = {
    "seconds": {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "m": 60.0, "min": 60.0},
    "ratio": {"": 1.0, "%": 0.01},
    "per_second": {"": 1.0, "/s": 1.0, "rps": 1.0},
    "count": {"": 1.0},
    "tokens": {"": 1.0},
    "bytes": {"": 1.0, "B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024.0,
              "MiB": 1024.0**2, "GiB": 1024.0**3},
    "watts": {"": 1.0, "W": 1.0, "kW": 1e3},
    "celsius": {"": 1.0, "C": 1.0, "°C": 1.0},
    "hertz": {"": 1.0, "Hz": 1.0, "MHz": 1e6, "GHz": 1e9},
    "joules": {"": 1.0, "J": 1.0, "kJ": 1e3, "Wh": 3600.0, "kWh": 3.6e6},
}  # fmt: skip


def parse_quantity(value: object, dimension: Dimension) -> float:
    """Return value in the base unit of dimension (seconds, fraction, per second).

    Plain numbers are taken as already in the base unit; a bare number for a ratio
    greater than 1 is refused because "0.1" and "0.1 %" differ by 100x.
    """
    if isinstance(value, bool):
        raise ValueError("expected a number or a quantity such as '500ms' or '0.1%'")
    if isinstance(value, int | float):
        number = float(value)
        unit = ""
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise ValueError(f"expected a quantity such as {_examples(dimension)}")
        number = float(match.group(1))
        unit = match.group(2)
    else:
        raise ValueError(f"expected a number or a quantity such as {_examples(dimension)}")
    scales = _SCALE[dimension]
    if unit not in scales:
        allowed = ", ".join(repr(u) for u in scales if u) or "none"
        raise ValueError(
            f"unit {unit!r} does not fit a {dimension} value (allowed units: {allowed})"
        )
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    result = number * scales[unit]
    if dimension == "ratio" and unit == "" and not 0.0 <= result <= 1.0:
        raise ValueError("a bare ratio must lie in [0, 1]; write a percentage as e.g. '0.1%'")
    if result < 0:
        raise ValueError("expected a value >= 0")
    return result


def _examples(dimension: Dimension) -> str:
    return {
        "seconds": "'500ms' or '2s'",
        "ratio": "'0.1%' or 0.001",
        "per_second": "'5/s' or 5",
        "count": "10",
        "tokens": "128",
        "bytes": "'40GiB'",
        "watts": "'300W'",
        "celsius": "'85C'",
        "hertz": "'1500MHz'",
        "joules": "'50kJ'",
    }[dimension]


def format_quantity(value: float | None, unit: str) -> str:
    """Render a base-unit value for people: seconds as ms below 10 s, ratios as percent."""
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "s":
        if abs(value) < 1:
            return f"{value * 1e3:.4g} ms"
        return f"{value:.3g} s"
    if unit == "ratio":
        return f"{value * 100:.3g} %"
    if unit == "1/s":
        return f"{value:,.0f}/s" if abs(value) >= 1000 else f"{value:.3g}/s"
    if unit == "bytes":
        return f"{value / 1024.0**3:.3g} GiB"
    if unit == "Hz":
        return f"{value / 1e6:.4g} MHz"
    if unit in ("W", "J", "C"):
        return f"{value:.4g} {'°C' if unit == 'C' else unit}"
    return f"{value:.4g}"
