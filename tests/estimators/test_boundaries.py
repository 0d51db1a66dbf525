"""Parameters at the ends of their range, samplers at the edge of the dtype, and the one check every estimate
passes: no estimator returns a non-finite gradient without raising a named error."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import stochgrad as sg
from cases import Z_THRESHOLD, z_test
from stochgrad.estimators.registry import estimator_names, get_spec, make_estimator

T = torch.float64
REPEATS = 20000


def _f(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x[..., 0] + 0.5 * x[..., 1]) + 0.3 * x[..., 0] * x[..., 2] + torch.sqrt(1 + x[..., 2])


def _expect(pmfs: list[torch.Tensor]) -> torch.Tensor:
    """E f by enumeration for independent coordinates with pmfs ``[K_i]`` over 0..K_i − 1."""
    grid = torch.tensor(list(itertools.product(*[range(p.shape[0]) for p in pmfs])), dtype=T)
    prob = torch.stack([pmfs[i][grid[:, i].long()] for i in range(len(pmfs))]).prod(0)
    return (prob * _f(grid).to(prob.dtype)).sum()


def _binomial_pmf(n: int, p: torch.Tensor) -> torch.Tensor:
    choose = torch.tensor([float(math.comb(n, k)) for k in range(n + 1)], dtype=T)
    return torch.stack([choose[k] * p ** k * (1 - p) ** (n - k) for k in range(n + 1)])


BOUNDARY = {
    # family, its parameter at the ends and inside, E f as a function of the parameter vector
    "bernoulli": (lambda p: sg.Bernoulli(probs=p), torch.tensor([0.0, 0.4, 1.0], dtype=T),
                  lambda p: _expect([torch.stack([1 - p[i], p[i]]) for i in range(3)])),
    "binomial": (lambda p: sg.Binomial(torch.tensor([3.0, 4.0, 2.0], dtype=T), p), torch.tensor([1.0, 0.3, 0.0], dtype=T),
                 lambda p: _expect([_binomial_pmf(n, p[i]) for i, n in enumerate((3, 4, 2))])),
    "geometric": (lambda p: sg.Geometric(p), torch.tensor([1.0, 0.6, 1.0], dtype=T),
                  lambda p: _expect([torch.stack([(1 - p[i]) ** k * p[i] for k in range(60)]) for i in range(3)])),
}


def _one_sided_gradient(exact, p: torch.Tensor, h: float = 1e-30) -> torch.Tensor:
    """The exact derivative by the complex step, Im E(p + ih·e_i) / h: E is a polynomial in each p_i (the
    geometric pmf truncated where its tail is below 1e-20), smooth through the ends, so this is the one-sided
    derivative to rounding, with no point outside the range and no 0/0."""
    out = torch.empty_like(p)
    for i in range(p.shape[0]):
        e = torch.zeros(p.shape, dtype=torch.complex128)
        e[i] = 1j * h
        out[i] = exact(p.to(torch.complex128) + e).imag / h
    return out


def _assert_unbiased(estimates: torch.Tensor, want: torch.Tensor) -> None:
    """z-test where the estimates vary; where they are exact but for rounding (a deterministic coordinate at
    the boundary) they must match to 1e-9."""
    result = z_test(estimates, want)
    exact = result.se < 1e-12 * (1 + want.abs())
    assert torch.allclose(result.mean[exact], want[exact], rtol=1e-9, atol=1e-12), (result.mean, want)
    if bool((~exact).any()):
        assert float(result.z[~exact].abs().max()) < Z_THRESHOLD, (result.mean, want, result.z)


@pytest.mark.parametrize("family", BOUNDARY)
def test_score_function_at_the_boundary_raises_a_named_error(family: str) -> None:
    """At probs 0 (or 1) every draw of the coordinate is 0 (or its maximum), so E[f·score] misses the derivative
    of the probability of the other values: the score function is biased there, and says so."""
    make, p, _ = BOUNDARY[family]
    dist = make(p)
    cls = type(dist).__name__
    for name in ("sf", "sf-loo", "sf-optimal", "ccmvd", "ccsf"):
        est = make_estimator(name, 40, dist)
        with pytest.raises(sg.UnsupportedError, match=rf"not valid for {cls}.probs here: 'probs' = 1?0?\.0 at index "
                                                      rf"\((0|2),\).*one-sided.*Use MeasureValued or Auto"):
            est.estimate(_f, dist, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", BOUNDARY)
@pytest.mark.parametrize("name", ["mvd", "mvd-uncoupled", "mvd-shared", "auto"])
def test_measure_valued_and_auto_give_the_one_sided_gradient(family: str, name: str) -> None:
    make, p, exact = BOUNDARY[family]
    want = _one_sided_gradient(exact, p)
    dist = make(p.expand(REPEATS, 3))
    est = make_estimator(name, 24, dist)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3 if name == "auto" else 1):            # Auto: the first estimate and after two more
        g = est.estimate(_f, dist, generator=gen)
        assert torch.isfinite(g.grad["probs"]).all()
        _assert_unbiased(g.grad["probs"], want)
        with pytest.raises(AssertionError):
            _assert_unbiased(g.grad["probs"] * 1.05, want)        # and a 5% error would be seen


def test_bernoulli_logits_never_reach_the_boundary_of_the_score() -> None:
    """With logits the score is x − p, finite even where float32 rounds p to 1 (logits 20)."""
    dist = sg.Bernoulli(logits=torch.tensor([20.0, 0.0, -20.0]))
    g = sg.ScoreFunction(8, baseline="loo").estimate(_f, dist, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(g.grad["logits"]).all()


def test_float32_gamma_with_small_concentration_never_draws_zero() -> None:
    """Four million float32 draws of Gamma(0.1): none is 0 (the small-α boost U^(1/α) underflowed before, about
    24 per million), and the fractions below tiny thresholds match the exact CDF, so the clamp at the smallest
    normal number changes nothing measurable."""
    alpha = 0.1
    x = sg.Gamma(torch.full((4_000_000,), alpha), torch.ones(1)).sample(generator=torch.Generator().manual_seed(0))
    tiny = torch.finfo(torch.float32).tiny
    assert bool((x >= tiny).all()) and bool(torch.isfinite(torch.log(x)).all())
    n = x.numel()
    for t in (1e-30, 1e-12, 1e-4, 0.1):
        cdf = float(torch.special.gammainc(torch.tensor(alpha, dtype=T), torch.tensor(t, dtype=T)))
        frac = float((x < t).double().mean())
        se = (cdf * (1 - cdf) / n) ** 0.5
        assert abs(frac - cdf) < 5 * se, (t, frac, cdf)
    # the same for the measure-valued points of the rate (Gamma(α, β) and Gamma(α + 1, β) draws)
    dist = sg.Gamma(torch.full((1_000_000, 2), alpha), torch.full((1_000_000, 2), 3.0))
    plan = sg.MeasureValued(1).plan(dist, torch.Generator().manual_seed(1), params=("rate",))
    assert bool((plan.points > 0).all())


@pytest.mark.parametrize("name", ["sf", "sf-loo", "sf-optimal", "ccsf", "auto"])
def test_score_function_on_small_concentration_float32_gamma_is_finite(name: str) -> None:
    dist = sg.Gamma(torch.full((20_000, 4), 0.1), torch.ones(20_000, 4))       # 1.3M draws: ~30 zeros before
    g = make_estimator(name, 16, dist).estimate(lambda x: torch.sqrt(x).sum(-1), dist,
                                                generator=torch.Generator().manual_seed(0))
    for v in g.grad.values():
        assert torch.isfinite(v).all()


@pytest.mark.parametrize("name", estimator_names())
def test_no_estimator_returns_a_non_finite_gradient_silently(name: str) -> None:
    """f's values are finite but huge, so several estimators overflow float32: each either returns a finite
    gradient or raises NonFiniteGradientError naming the parameter; the plain score function must raise."""
    dist = sg.Normal(torch.zeros(64, 3), torch.ones(64, 3))
    f = lambda x: 3e38 * torch.tanh(x[..., 0] + x[..., 1])  # noqa: E731
    est = make_estimator(name, 24, dist)
    try:
        g = est.estimate(f, dist, generator=torch.Generator().manual_seed(0))
    except sg.NonFiniteGradientError as err:
        assert "Normal.loc is not finite" in str(err) or "Normal.scale is not finite" in str(err)
        assert "f's values were finite" in str(err)
        return
    assert name not in ("sf", "sf-mean"), "the score function overflowed without an error"
    assert all(bool(torch.isfinite(v).all()) for v in g.grad.values()), get_spec(name)


def test_pathwise_through_an_f_whose_derivative_is_infinite() -> None:
    """sqrt at 0: the values are finite, the derivative is not; the error says so."""
    dist = sg.Uniform(torch.ones(3))
    plan = sg.Pathwise(4).plan(dist, torch.Generator().manual_seed(0))
    with pytest.raises(sg.NonFiniteGradientError, match=r"Uniform.low is not finite: .*f's derivative at some point "
                                                        r"is not finite"):
        plan.combine(torch.sqrt(plan.points * 0).sum(-1))
