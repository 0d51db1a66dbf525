"""Gradient-quality metrics: exact values on synthetic estimates, and behaviour on real estimators."""

from __future__ import annotations

import math

import pytest
import torch

from stochgrad.lab.functions import FUNCTIONS
from stochgrad.lab.metrics import Problem, measure, quality

T = torch.float64


def test_quality_on_known_estimates() -> None:
    exact = torch.tensor([1.0, 0.0], dtype=T)
    est = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, -1.0]], dtype=T)
    q = quality(est, exact)
    assert q["rel_mse"] == pytest.approx((1 + 1 + 1 + 1) / 4)
    assert q["bias_rel"] == pytest.approx(0.0)
    assert q["total_variance"] == pytest.approx(est[:, 0].var().item() + est[:, 1].var().item())
    cos = [1.0, 0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]
    assert q["cos_mean"] == pytest.approx(sum(cos) / 4)


def test_quality_sees_a_bias() -> None:
    exact = torch.tensor([1.0, 2.0], dtype=T)
    est = exact + 0.5 + 0.01 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=T)
    q = quality(est, exact)
    assert q["bias_max_z"] > 100
    assert q["bias_rel"] == pytest.approx(math.sqrt(0.5) / math.sqrt(5), rel=0.05)


@pytest.mark.parametrize("estimator", ["sf-loo", "mvd", "pathwise"])
def test_measure_is_unbiased_and_improves_with_budget(estimator: str) -> None:
    problem = Problem.default(FUNCTIONS["rosenbrock"], 10)
    small = measure(estimator, problem, 20, repeats=2000, seed=1)
    large = measure(estimator, problem, 80, repeats=2000, seed=2)
    assert small["bias_max_z"] < 5 and large["bias_max_z"] < 5
    assert large["rel_mse"] < 0.4 * small["rel_mse"]
    assert small["n_evals"] == 20 and large["n_evals"] == 80


def test_measure_is_deterministic_and_chunking_does_not_change_results(monkeypatch) -> None:
    problem = Problem.default(FUNCTIONS["sphere"], 4)
    a = measure("sf-loo", problem, 16, repeats=64, seed=3)
    b = measure("sf-loo", problem, 16, repeats=64, seed=3)
    assert a["rel_mse"] == b["rel_mse"]
    import stochgrad.lab.metrics as m
    monkeypatch.setattr(m, "CHUNK_ELEMENTS", 16 * 4 * 7)  # 7 repeats per chunk
    c = measure("sf-loo", problem, 16, repeats=64, seed=3)
    assert c["rel_mse"] == pytest.approx(a["rel_mse"], rel=0.5)   # different draws, same law
