"""The reward curve's y axis follows the data, not the threshold; the starting policy is on the curve."""

from __future__ import annotations

import numpy as np

from stochgrad.rl.plots import curve_on_grid, reward_curve, y_limits


def test_y_limits_span_the_data_with_a_margin_and_ignore_nan() -> None:
    assert y_limits(np.array([[0.0, np.nan], [100.0, 50.0]])) == (-5.0, 105.0)
    assert y_limits(np.array([np.nan])) is None
    low, high = y_limits(np.array([7.0, 7.0]))
    assert low < 7.0 < high


def test_a_row_at_episode_zero_starts_the_curve_there() -> None:
    rows = [{"episodes": 0, "eval_return": -10.0}, {"episodes": 100, "eval_return": 30.0}]
    grid = np.array([0.0, 50.0, 100.0, 150.0])
    y = curve_on_grid(rows, grid)
    assert y[:3].tolist() == [-10.0, 10.0, 30.0] and np.isnan(y[3])


def test_reward_curve_writes_a_png_with_a_threshold_far_above_the_data(tmp_path) -> None:
    seeds = [[{"episodes": 0, "eval_return": 1.0}, {"episodes": 10, "eval_return": 5.0 + s}] for s in range(3)]
    path = reward_curve({"ars": seeds}, tmp_path / "c.png", "t", threshold=4390.0)
    assert path.read_bytes()[:4] == b"\x89PNG"
