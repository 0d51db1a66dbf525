"""Reported variances are calibrated: for every registered estimator on every (family, parameter) it supports,
the mean over independent copies of ``estimate.variance`` matches the variance of the estimates across the
copies, at the first estimate and after a warm-up; and f → c·f multiplies it by c².

Many copies come from one call (leading parameter dimensions: ``Normal(loc [R, D])`` gives R independent
estimates), at a small and a moderate budget (8 and 24 evaluations). With R = 4000 copies and D = 4 components the empirical variance of each parameter (summed over
its components) has a relative standard error of about √(2/(R·D))·√(kurtosis/3) ≈ 2–5 % here (the worst cells
have heavy-tailed score-function terms), and the mean reported variance has a smaller one; the tolerance
[0.8, 1.25] is more than four standard errors away in every cell, and the seeds are fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import stochgrad as sg
from stochgrad.errors import BudgetError, UnsupportedError
from stochgrad.estimators.registry import estimator_names, make_estimator

T = torch.float64
R = 4000
D = 4
BUDGET = 24
WARMUP = 4
W = torch.tensor([0.7, -0.4, 0.9, 0.5], dtype=T)


def f(x: torch.Tensor) -> torch.Tensor:
    """Smooth, bounded in the continuous part, with cross terms: ``[..., D] -> [...]``."""
    x = x.to(T)
    return torch.sin(x @ W) + 0.3 * x[..., 0] * x[..., 1] + 0.2 * x[..., 2]


def _v(*vals: float) -> torch.Tensor:
    return torch.tensor(vals, dtype=T).expand(R, D).clone()


#: (case name, family built for R copies, parameter)
FAMILIES: list[tuple[str, Callable[[], sg.Family], str]] = [
    ("normal-loc", lambda: sg.Normal(_v(0.2, -0.5, 0.8, 0.1), _v(0.5, 0.8, 0.3, 1.0)), "loc"),
    ("normal-scale", lambda: sg.Normal(_v(0.2, -0.5, 0.8, 0.1), _v(0.5, 0.8, 0.3, 1.0)), "scale"),
    ("bernoulli-probs", lambda: sg.Bernoulli(probs=_v(0.2, 0.5, 0.7, 0.4)), "probs"),
    ("bernoulli-logits", lambda: sg.Bernoulli(logits=_v(-1.0, 0.0, 0.8, 0.3)), "logits"),
    ("categorical-logits", lambda: sg.Categorical(torch.tensor([[0.0, 0.5, -0.5], [1.0, 0.0, 0.0], [0.2, -0.3, 0.4],
                                                                [0.0, 0.0, 0.9]], dtype=T).expand(R, D, 3).clone()),
     "logits"),
    ("poisson-rate", lambda: sg.Poisson(_v(1.0, 2.0, 0.5, 1.5)), "rate"),
    ("exponential-rate", lambda: sg.Exponential(_v(1.0, 2.0, 1.5, 3.0)), "rate"),
    ("gamma-concentration", lambda: sg.Gamma(_v(2.0, 3.0, 1.5, 2.5), _v(1.0, 2.0, 1.5, 3.0)), "concentration"),
    ("gamma-rate", lambda: sg.Gamma(_v(2.0, 3.0, 1.5, 2.5), _v(1.0, 2.0, 1.5, 3.0)), "rate"),
    ("binomial-probs", lambda: sg.Binomial(torch.full((R, D), 4.0, dtype=T), _v(0.2, 0.5, 0.7, 0.4)), "probs"),
    ("geometric-probs", lambda: sg.Geometric(_v(0.3, 0.5, 0.7, 0.4)), "probs"),
    ("uniform-high", lambda: sg.Uniform(_v(1.0, 2.0, 1.5, 0.5)), "high"),
]

#: Estimators whose variance has no second sample of any kind: plain MVD with one pair per component
#: (``budget // (2·components) = 1``) reports NaN, as documented in docs/estimators.md.
NAN_BY_DESIGN = {"mvd", "mvd-shared", "mvd-uncoupled"}


def _build(name: str, make: Callable[[], sg.Family], param: str, budget: int = BUDGET):
    dist = make()
    try:
        est = make_estimator(name, budget, dist, (param,))
        est.plan(dist, torch.Generator().manual_seed(0), (param,))
    except (UnsupportedError, BudgetError):
        return None
    if hasattr(est, "reset"):
        est.reset()
    return est


def calibration(name: str, make: Callable[[], sg.Family], param: str, warmup: int, scale: float = 1.0,
                seed: int = 0, budget: int = BUDGET) -> tuple[float, torch.Tensor] | None:
    """(mean reported variance / empirical variance, summed over components; the reported variances
    ``[R, ...]``) of estimate number ``warmup + 1``; None when the estimator does not support the case."""
    est = _build(name, make, param, budget)
    if est is None:
        return None
    gen = torch.Generator().manual_seed(seed)
    dist = make()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return scale * f(x)

    for _ in range(warmup):
        est.estimate(fn, dist, generator=gen, params=(param,))
    g = est.estimate(fn, dist, generator=gen, params=(param,))
    grad, var = g.grad[param].reshape(R, -1), g.variance[param].reshape(R, -1)
    empirical = grad.var(0).sum()
    return float(var.mean(0).sum() / empirical), g.variance[param]


CASES = [(name, case, make, param) for name in estimator_names() for case, make, param in FAMILIES]


@pytest.mark.parametrize("budget", [pytest.param(8, marks=pytest.mark.slow), BUDGET])
@pytest.mark.parametrize("warmup", [0, WARMUP])
@pytest.mark.parametrize("name,case,make,param", CASES, ids=[f"{n}-{c}" for n, c, _, _ in CASES])
def test_reported_variance_is_calibrated(name: str, case: str, make, param: str, warmup: int, budget: int) -> None:
    out = calibration(name, make, param, warmup, budget=budget)
    if out is None:
        pytest.skip(f"{name} does not support {case}")
    ratio, var = out
    if name in NAN_BY_DESIGN and bool(torch.isnan(var).all()):
        return                              # one pair per component: no second sample of any kind
    if name == "auto" and case == "uniform-high" and warmup == 0 and budget == 2 * D:
        assert bool(torch.isnan(var).all())   # MVD alone, one pair per component, no history: the same
        return
    assert bool(torch.isfinite(var).all()), f"{name} on {case}: {int((~torch.isfinite(var)).sum())} NaN entries"
    assert 0.8 <= ratio <= 1.25, f"{name} on {case} after {warmup} estimates: reported/empirical = {ratio:.3f}"


@pytest.mark.parametrize("name", estimator_names())
def test_reported_variance_is_scale_equivariant(name: str) -> None:
    for case, make, param in FAMILIES[:1] + FAMILIES[5:6]:
        for warmup in (0, 3):
            base = calibration(name, make, param, warmup, seed=5)
            if base is None:
                continue
            scaled = calibration(name, make, param, warmup, scale=1000.0, seed=5)
            ok = torch.isfinite(base[1])
            assert torch.equal(ok, torch.isfinite(scaled[1]))
            # atol: entries whose variance is zero up to rounding (all terms equal) scale only approximately
            atol = 1e-9 * float(scaled[1][ok].abs().max())
            assert torch.allclose(scaled[1][ok], 1e6 * base[1][ok], rtol=1e-6, atol=atol), (name, case, warmup)


def test_plain_mvd_with_one_pair_reports_nan_and_with_two_pairs_is_calibrated() -> None:
    make = FAMILIES[0][1]
    ratio, var = calibration("mvd", make, "loc", 0, budget=2 * D)
    assert bool(torch.isnan(var).all())
    ratio, var = calibration("mvd", make, "loc", 0, budget=4 * D)
    assert 0.8 <= ratio <= 1.25 and not math.isnan(ratio)


@pytest.mark.parametrize("case", ["normal-loc", "bernoulli-probs", "exponential-rate", "poisson-rate"])
def test_autos_first_estimate_is_calibrated_where_every_component_gets_a_pair(case: str) -> None:
    """D = 20, B = 80: Auto's first estimate gives one MVD pair to each component and a second to 8 of them;
    the one-pair components' variance is borrowed from 4 of those, their weights from the other 4 (a variance
    that shared the weights' ratio measured 0.71-0.94x). Measured 1.03-1.13 on these cases."""
    d, r = 20, 2000
    gen_w = torch.Generator().manual_seed(3)
    w = torch.randn(d, generator=gen_w, dtype=T) * 0.8

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.to(T)
        return torch.sin(x @ w) + 0.3 * x[..., 0] * x[..., 1] + 0.2 * x[..., 2]

    u = torch.rand(d, generator=torch.Generator().manual_seed(5), dtype=T).expand(r, d).clone()
    dist, param = {
        "normal-loc": (lambda: sg.Normal(-0.5 + 1.3 * u, 0.3 + 0.7 * u), "loc"),
        "bernoulli-probs": (lambda: sg.Bernoulli(probs=0.2 + 0.5 * u), "probs"),
        "exponential-rate": (lambda: sg.Exponential(1.0 + 2.0 * u), "rate"),
        "poisson-rate": (lambda: sg.Poisson(0.5 + 1.5 * u), "rate"),
    }[case]
    g = sg.Auto(80).estimate(fn, dist(), generator=torch.Generator().manual_seed(0), params=(param,))
    pairs = g.info["pairs"][param]
    assert bool((pairs >= 1).all()) and bool(((pairs == 2).sum(-1) == 8).all())
    ratio = float(g.variance[param].mean(0).sum() / g.grad[param].var(0).sum())
    assert 0.8 <= ratio <= 1.25, ratio


def test_ccmvds_variance_after_warm_up_is_unbiased_on_average_over_the_families() -> None:
    """CCMVD with one MVD pair per chosen component reports, after a warm-up, a successive-difference variance
    ``(b − b_prev)²``. With weights from averages that already held b_prev it measured 0.80-1.00 per family
    (0.91 pooled): the weight trusted b least exactly where that difference was large. Weights from the averages
    before b_prev (``ComponentStats.lagged``) are independent of it; pooled over the ten families the ratio's
    standard error is about 1 %."""
    ratios = []
    for _, make, param in FAMILIES:
        for warmup in (4, 10):
            out = calibration("ccmvd", make, param, warmup, seed=11)
            if out is not None:
                ratios.append(out[0])
    assert len(ratios) == 20
    mean = sum(ratios) / len(ratios)
    assert 0.96 <= mean <= 1.04, (mean, ratios)
