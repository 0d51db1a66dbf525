"""Estimator behaviour beyond unbiasedness: determinism, coupling, variance estimates, black-box use."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from cases import CASES, ESTIMATORS, PROBLEMS, Case, repeated_estimates
from stochgrad.estimators.registry import estimator_names, make_estimator

T = torch.float64


@pytest.mark.parametrize("case", CASES[::3], ids=[c.id for c in CASES[::3]])
def test_same_seed_same_gradient(case: Case) -> None:
    a = repeated_estimates(case, 50, seed=7)
    b = repeated_estimates(case, 50, seed=7)
    c = repeated_estimates(case, 50, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_plan_combine_equals_estimate_and_reports_evaluations(gen) -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist()
    for name, make in ESTIMATORS.items():
        est = make()
        g1 = est.estimate(prob.f, dist, generator=torch.Generator().manual_seed(3))
        plan = est.plan(dist, torch.Generator().manual_seed(3))
        g2 = plan.combine(prob.f(plan.points))
        assert g1.n_evals == g2.n_evals == plan.points.shape[0] == est.n_evals(dist), name
        for k in g1.grad:
            assert torch.equal(g1.grad[k], g2.grad[k]), name


def test_n_evals_of_measure_valued_is_two_m_per_component() -> None:
    dist = sg.Normal(torch.zeros(10), torch.ones(10))
    assert sg.MeasureValued(3).n_evals(dist) == 2 * 3 * 20
    assert sg.MeasureValued(3).n_evals(dist, params=("loc",)) == 2 * 3 * 10
    assert sg.MeasureValued(1, dims=[1, 4]).n_evals(dist, params=("scale",)) == 4
    cat = sg.Categorical(torch.zeros(4, 3))
    assert sg.MeasureValued(1).n_evals(cat) == 2 * 12


def _empirical_variance(case: Case, estimator: sg.Estimator, repeats: int = 4000) -> torch.Tensor:
    return repeated_estimates(case, repeats, seed=11, estimator=estimator).var(0)


@pytest.mark.parametrize("param", ["loc", "scale"])
def test_coupled_mvd_has_lower_variance_than_uncoupled_on_the_normal(param: str) -> None:
    """Equal evaluations (both 2·M per component): coupling the + and − points must cut the variance."""
    case = Case("normal", param, "mvd", ESTIMATORS["mvd"])
    coupled = _empirical_variance(case, sg.MeasureValued(2, coupled=True))
    uncoupled = _empirical_variance(case, sg.MeasureValued(2, coupled=False))
    assert (coupled < 0.5 * uncoupled).all(), (coupled, uncoupled)


#: The fixed configurations of ``ESTIMATORS`` (MVD with M = 2, which has a variance estimate of its own) on the
#: problems with D <= 3.
FIXED = [Case(c.problem, c.param, c.estimator, ESTIMATORS[c.estimator]) for c in CASES
         if c.estimator in ("sf", "sf-antithetic", "mvd", "pathwise") and "-d" not in c.problem and not c.warmup]


@pytest.mark.parametrize("case", FIXED, ids=lambda c: c.id)
def test_reported_variance_matches_the_spread_of_repeated_estimates(case: Case) -> None:
    prob = PROBLEMS[case.problem]
    dist = prob.dist(copies=4000)
    g = case.make().estimate(prob.f, dist, generator=torch.Generator().manual_seed(5), params=(case.param,))
    empirical = g.grad[case.param].var(0)
    reported = g.variance[case.param].mean(0)
    ok = empirical < 1e-20
    ratio = torch.where(ok, torch.ones_like(empirical), reported / empirical.clamp_min(1e-300))
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), (case.id, reported, empirical)


def test_mvd_with_one_sample_per_dimension_reports_unknown_variance() -> None:
    prob = PROBLEMS["normal"]
    g = sg.MeasureValued(1).estimate(prob.f, prob.dist(), generator=torch.Generator().manual_seed(0))
    assert torch.isnan(g.variance["loc"]).all()


def test_baselines_remove_the_offset_of_f() -> None:
    """Adding a constant to f inflates the plain score function's variance but not the baselined ones'."""
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=4000)

    def var(est, offset):
        g = est.estimate(lambda x: prob.f(x) + offset, dist, generator=torch.Generator().manual_seed(4))
        return g.grad["loc"].var(0).sum()

    assert var(sg.ScoreFunction(16), 10.0) > 20 * var(sg.ScoreFunction(16), 0.0)
    for baseline in ("loo", "optimal"):
        est = sg.ScoreFunction(16, baseline=baseline)
        assert torch.allclose(var(est, 10.0), var(est, 0.0), rtol=1e-6)
        assert var(est, 10.0) < 0.05 * var(sg.ScoreFunction(16), 10.0)


class _NoAutograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("a black-box estimator differentiated f")


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "pathwise"])
def test_black_box_estimators_never_differentiate_f(name: str) -> None:
    prob = PROBLEMS["normal"]
    loc = prob.params["loc"].clone().requires_grad_(True)
    dist = sg.Normal(loc, prob.params["scale"])

    def f(x):
        assert not x.requires_grad
        return _NoAutograd.apply(prob.f(x))

    loss = sg.expectation(f, dist, ESTIMATORS[name](), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loc.grad is not None


def test_serial_evaluator_gives_the_same_numbers_as_vectorized() -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=3)
    for name, make in ESTIMATORS.items():
        a = make().estimate(prob.f, dist, generator=torch.Generator().manual_seed(9))
        b = make().estimate(lambda x: prob.f(x), dist, generator=torch.Generator().manual_seed(9),
                            evaluator=sg.evaluators.Serial())
        for k in a.grad:
            assert torch.allclose(a.grad[k], b.grad[k], atol=1e-12), name


def test_mvd_value_uses_the_side_distributed_as_p() -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=20000)
    g = sg.MeasureValued(1).estimate(prob.f, dist, generator=torch.Generator().manual_seed(0))
    exact = prob.exact(prob.params)
    assert abs(float(g.value.mean()) - float(exact)) < 5 * float(g.value.std()) / 20000 ** 0.5
    g_loc = sg.MeasureValued(1).estimate(prob.f, prob.dist(), generator=torch.Generator().manual_seed(0),
                                         params=("loc",))
    assert torch.isnan(g_loc.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [
    lambda: sg.ScoreFunction(8, baseline="loo"), lambda: sg.ScoreFunction(8, baseline="optimal", antithetic=True),
    lambda: sg.MeasureValued(2), lambda: sg.MeasureValued(1, shared_base=True),
    lambda: sg.MeasureValued(1, coupled=False), lambda: sg.Pathwise(4), lambda: sg.CCMVD(8, 1, 2),
    lambda: sg.Auto(40)], ids=["sf-loo", "sf-antithetic-optimal", "mvd", "mvd-shared", "mvd-uncoupled",
                               "pathwise", "ccmvd", "auto"])
@pytest.mark.parametrize("f", [lambda x: (x - 1.0).square().sum(-1), sg.Separable(lambda v, i: (v - 1.0).square())],
                         ids=["plain", "separable"])
def test_estimates_keep_the_dtype_the_user_chose(dtype, make, f) -> None:
    dist = sg.Normal(torch.zeros(2, 5, dtype=dtype), torch.full((2, 5), 0.3, dtype=dtype))
    g = make().estimate(f, dist, generator=torch.Generator().manual_seed(0))
    assert make().plan(dist, torch.Generator().manual_seed(0)).points.dtype == dtype
    for name in ("loc", "scale"):
        assert g.grad[name].dtype == dtype and g.variance[name].dtype == dtype, name
        assert g.grad[name].shape == (2, 5)
    assert g.values.dtype == dtype


def test_all_finite_is_exact_even_when_the_sum_overflows() -> None:
    from stochgrad.estimators.base import all_finite

    big = torch.full((4,), 3e38, dtype=torch.float32)          # finite, but the sum overflows to inf
    assert all_finite(big) and all_finite(torch.empty(0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.ones(5, dtype=torch.float32)
        x[3] = bad
        assert not all_finite(x)
    assert not all_finite(torch.tensor([float("inf"), -float("inf")]))
    big_f = lambda x: torch.full((x.shape[0],), 3e38)  # noqa: E731
    g = sg.MeasureValued(1).estimate(big_f, sg.Normal(torch.zeros(2), 1.0), generator=torch.Generator().manual_seed(0))
    assert g.n_evals == 8 and bool((g.grad["loc"] == 0).all())   # huge but finite values are accepted
    # which components overflow, and to inf or NaN, depends on the CPU's summation order (one machine: inf in
    # 1 of 2, another: NaN and inf in 2 of 2); the message must name the parameter and f's finite largest value
    with pytest.raises(sg.NonFiniteGradientError,
                       match=r"Normal.loc is not finite: .*in \d of 2 .*f's values were finite \(largest \|f\| = 3e\+38"):
        sg.ScoreFunction(4).estimate(big_f, sg.Normal(torch.zeros(2), 1.0), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("values_dtype", [torch.float64, torch.float16, torch.int64])
@pytest.mark.parametrize("name", estimator_names())
def test_values_of_another_dtype_are_cast_to_the_distributions(name: str, values_dtype: torch.dtype) -> None:
    """f returning float64 (or float16, or integers) for float32 points: the values are cast to float32 before
    they are combined, so every estimator gives the float32 estimate it gives for float32 values."""
    if name == "pathwise" and values_dtype == torch.int64:
        pytest.skip("integer values carry no gradient")
    dist = sg.Normal(torch.zeros(2, 3), torch.ones(2, 3))
    # Pathwise needs a differentiable f; the others get values that are exact in every dtype (integers).
    g_of = (lambda x: 3 * x) if name == "pathwise" else (lambda x: (3 * x).round())

    def make_f(dtype: torch.dtype):
        return lambda x: g_of(x).sum(-1).to(values_dtype).to(dtype)

    grads = []
    for f in (make_f(torch.float32), make_f(values_dtype)):
        for evaluator in (None, sg.evaluators.Vectorized()):
            g = make_estimator(name, 24, dist).estimate(f, dist, generator=torch.Generator().manual_seed(0),
                                                        evaluator=evaluator)
            assert g.values.dtype == torch.float32 and all(v.dtype == torch.float32 for v in g.grad.values())
            grads.append(g.grad)
    for g in grads[1:]:
        for k in g:
            assert torch.allclose(g[k], grads[0][k], rtol=1e-3, atol=1e-3), (name, k)
