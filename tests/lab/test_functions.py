"""Each test function's exact smoothed gradient agrees with a large Monte Carlo estimate."""

from __future__ import annotations

import math

import pytest
import torch

from stochgrad.lab.functions import FUNCTIONS, get_function
from stochgrad.errors import InvalidArgumentError

T = torch.float64


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_exact_gradient_matches_a_large_monte_carlo_estimate(name: str, dim: int) -> None:
    fn = FUNCTIONS[name]
    loc = fn.default_loc(dim)
    scale = torch.linspace(0.1, 0.6, dim, dtype=T)
    g_loc, g_scale = fn.gradient(loc, scale)
    # Pathwise Monte Carlo with 400k draws, per-sample contributions give the standard error.
    lo, sc = loc.clone().requires_grad_(True), scale.clone().requires_grad_(True)
    eps = torch.randn(400_000, dim, generator=torch.Generator().manual_seed(0), dtype=T)
    x = (lo + sc * eps).detach().requires_grad_(True)
    (gx,) = torch.autograd.grad(fn(x).sum(), x)
    for exact, contrib in ((g_loc, gx), (g_scale, gx * eps)):
        mean, se = contrib.mean(0), contrib.std(0) / math.sqrt(len(contrib))
        z = (mean - exact) / se
        assert z.abs().max() < 5, (name, dim, exact, mean, se)
    value = fn(x.detach())
    assert abs(float(value.mean() - fn.expected(loc, scale))) < 5 * float(value.std()) / math.sqrt(len(value))


def test_ackley_reference_has_a_tiny_error_bar() -> None:
    fn = FUNCTIONS["ackley"]
    loc = fn.default_loc(10)
    err_loc, err_scale = fn.reference_error(loc, torch.full((10,), 0.5, dtype=T))
    g_loc, _ = fn.gradient(loc, torch.full((10,), 0.5, dtype=T))
    assert float(err_loc.max()) < 1e-10 * float(g_loc.abs().max())


def test_closed_forms_have_zero_error_bar_and_gradients_are_cached() -> None:
    fn = FUNCTIONS["rosenbrock"]
    loc, scale = fn.default_loc(3), torch.full((3,), 0.1, dtype=T)
    assert float(fn.reference_error(loc, scale)[0].abs().max()) == 0.0
    a = fn.gradient(loc, scale)
    a[0].add_(1.0)  # the cache hands out copies
    assert torch.equal(fn.gradient(loc, scale)[0] + 1.0, a[0])


def test_unknown_function_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown name 'rosenbrok'; choose one of sphere, ellipsoid, "
                                                   "rosenbrock, rastrigin, styblinski-tang, ackley"):
        get_function("rosenbrok")
