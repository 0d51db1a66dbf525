"""The discrete lab problems' exact gradients agree with large score-function Monte Carlo estimates."""

from __future__ import annotations

import pytest
import torch

from stochgrad.lab.discrete import DISCRETE


@pytest.mark.parametrize("name", list(DISCRETE))
def test_exact_gradient_matches_a_large_monte_carlo_estimate(name: str) -> None:
    p = DISCRETE[name]
    dim = 5
    dist = p.dist(dim)
    x = dist.sample((400_000,), torch.Generator().manual_seed(0))
    values = p.f(x)
    s = dist.score(x, p.param).reshape(x.shape[0], -1)
    contrib = (values - values.mean()).unsqueeze(-1) * s
    mean, se = contrib.mean(0), contrib.std(0) / 400_000 ** 0.5
    exact = p.exact(dim)
    assert ((mean - exact) / se).abs().max() < 5, (name, mean, exact)
    assert abs(float(values.mean() - p.expected(p.point(dim)))) < 5 * float(values.std()) / 400_000 ** 0.5
    assert exact.abs().max() > 0


def test_logistic_quadrature_is_converged() -> None:
    from stochgrad.lab import functions as fns

    loc, scale = torch.linspace(-0.5, 0.5, 6, dtype=torch.float64), torch.full((6,), 0.7, dtype=torch.float64)
    a = fns.FUNCTIONS["sum-logistic"].expected(loc, scale)
    old = fns.QUADRATURE_NODES
    try:
        fns.QUADRATURE_NODES = 2001
        b = fns.FUNCTIONS["sum-logistic"].expected(loc, scale)
    finally:
        fns.QUADRATURE_NODES = old
    assert abs(float(a - b)) < 1e-12
