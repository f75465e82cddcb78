"""Planned (words) against actual (usage) prompt tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.workload.calibration import token_calibration


def test_constant_ratio() -> None:
    cal = token_calibration([10, 20, 40, 80], [11, 22, 44, 88])
    assert cal["n"] == 4
    for key in ("mean_ratio", "p5_ratio", "p95_ratio"):
        assert cal[key] == pytest.approx(1.1)


def test_percentiles_interpolate_between_requests() -> None:
    cal = token_calibration(np.full(100, 100), np.arange(1, 101))
    assert cal["n"] == 100
    assert cal["mean_ratio"] == pytest.approx(0.505)
    assert cal["p5_ratio"] == pytest.approx(0.05 + 0.95 * 0.01)  # rank 4.95 of 0..99
    assert cal["p95_ratio"] == pytest.approx(0.95 + 0.05 * 0.01)  # rank 94.05


def test_requests_without_usage_or_plan_are_left_out() -> None:
    cal = token_calibration([10, 10, 0, 10, 10], [20, None, 5, math.nan, 30])
    assert cal["n"] == 2
    assert cal["mean_ratio"] == pytest.approx(2.5)


def test_no_data_gives_no_numbers() -> None:
    assert token_calibration([], []) == {
        "n": 0, "mean_ratio": None, "p5_ratio": None, "p95_ratio": None,
    }  # fmt: skip
    assert token_calibration([5], [None])["mean_ratio"] is None


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        token_calibration([1, 2], [1])
