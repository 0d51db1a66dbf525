"""CCMVD, CCSF and Auto: unbiasedness, variance reduction at equal evaluations, weights, state, errors."""

from __future__ import annotations

import math

import pytest
import torch

import stochgrad as sg
from cases import PROBLEMS, Z_THRESHOLD, z_test
from stochgrad.lab.functions import FUNCTIONS
from stochgrad.lab.metrics import Problem

REPEATS = 20000
WARMUP = 8


def _warm_estimate(est: sg.Estimator, prob, params, repeats=REPEATS, warmup=WARMUP, seed=0):
    dist = prob.dist(copies=repeats)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(warmup):
        est.estimate(prob.f, dist, generator=gen, params=params)
    return est.estimate(prob.f, dist, generator=gen, params=params)


HYBRID_CASES = [
    ("normal", ("loc", "scale"), lambda: sg.CCMVD(n_samples=3, samples_per_dim=1, k=2)),
    ("normal", ("loc",), lambda: sg.CCMVD(n_samples=2, samples_per_dim=2, k=1, select="random")),
    ("normal", ("loc", "scale"), lambda: sg.CCSF(n_samples=3, samples_per_dim=1, k=2)),
    ("poisson", ("rate",), lambda: sg.CCMVD(n_samples=3, samples_per_dim=1, k=1)),
    ("bernoulli-logits", ("logits",), lambda: sg.CCMVD(n_samples=3, samples_per_dim=1, k=2)),
]


@pytest.mark.parametrize("problem, params, make", HYBRID_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(HYBRID_CASES)])
def test_hybrids_with_running_weights_are_unbiased(problem, params, make) -> None:
    prob = PROBLEMS[problem]
    g = _warm_estimate(make(), prob, params)
    exact = prob.exact_grad()
    for p in params:
        result = z_test(g.grad[p], exact[p])
        assert result.max_abs_z < Z_THRESHOLD, (p, result.mean, exact[p], result.z)


AUTO_CASES = [(name, tuple(prob.params)) for name, prob in PROBLEMS.items() if "-d" not in name]   # D <= 3


@pytest.mark.parametrize("problem, params", AUTO_CASES, ids=[c[0] for c in AUTO_CASES])
@pytest.mark.parametrize("budget", [12, 40])
def test_auto_is_unbiased_for_every_family(problem, params, budget) -> None:
    prob = PROBLEMS[problem]
    est = sg.Auto(budget)
    g = _warm_estimate(est, prob, params)
    assert g.n_evals == est.n_evals(prob.dist(), params) <= budget
    exact = prob.exact_grad()
    for p in params:
        result = z_test(g.grad[p], exact[p])
        assert result.max_abs_z < Z_THRESHOLD, (problem, p, result.mean, exact[p], result.z)


@pytest.mark.parametrize("problem", ["normal", "poisson", "bernoulli-probs", "uniform"])
@pytest.mark.parametrize("budget", [12, 40])
@pytest.mark.parametrize("warmup", [0, 1])
def test_auto_is_unbiased_from_a_cold_start(problem, budget, warmup) -> None:
    """The first estimates (cross-fitted pilot, score function alone, MVD measured unused) are unbiased."""
    prob = PROBLEMS[problem]
    params = tuple(prob.params)
    g = _warm_estimate(sg.Auto(budget), prob, params, warmup=warmup)
    exact = prob.exact_grad()
    for p in params:
        result = z_test(g.grad[p], exact[p])
        assert result.max_abs_z < Z_THRESHOLD, (problem, p, result.mean, exact[p], result.z)


def test_the_z_test_rejects_a_biased_auto() -> None:
    """Batch-sized bias is caught at these repeats: shrink Auto's estimate by 20% and the test fails."""
    prob = PROBLEMS["normal"]
    g = _warm_estimate(sg.Auto(12), prob, ("loc", "scale"))
    exact = prob.exact_grad()
    assert max(z_test(0.8 * g.grad[p], exact[p]).max_abs_z for p in ("loc", "scale")) > Z_THRESHOLD


def test_min_variance_weights_and_the_blog_formula() -> None:
    """Two independent unbiased estimates with variances 1 and 4: the minimum-variance weights give variance
    1·4/(1+4) = 0.8; the blog post's weights (the larger weight on the noisier estimate) give 2.6."""
    va, vb = torch.tensor(1.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)
    w = sg.min_variance_weight(va, vb)
    assert float(w) == pytest.approx(0.8)
    gen = torch.Generator().manual_seed(0)
    a = 1.0 + torch.randn(200_000, generator=gen, dtype=torch.float64)
    b = 1.0 + 2.0 * torch.randn(200_000, generator=gen, dtype=torch.float64)
    ours = w * a + (1 - w) * b
    blog_w = va / (va + vb)
    blog = blog_w * a + (1 - blog_w) * b
    assert float(ours.var()) == pytest.approx(0.8, rel=0.02)
    assert float(blog.var()) == pytest.approx(2.6, rel=0.02)
    assert float(ours.var()) < float(a.var()) and float(ours.var()) < float(blog.var())


def test_min_variance_weight_with_correlation_and_degenerate_inputs() -> None:
    w = sg.min_variance_weight(torch.tensor(1.0), torch.tensor(2.0), cov=torch.tensor(0.5))
    assert float(w) == pytest.approx((2 - 0.5) / (1 + 2 - 1))
    assert float(sg.min_variance_weight(torch.tensor(math.nan), torch.tensor(1.0))) == 0.5
    assert float(sg.min_variance_weight(torch.tensor(0.0), torch.tensor(0.0))) == 0.5


def test_ccmvd_reduces_variance_on_chosen_components_where_ccsf_does_not() -> None:
    """Rosenbrock D = 10, equal budget 2(N + M·K): on the chosen components CCMVD's squared error is well below
    a plain score function's (antithetic pairs, leave-one-pair-out baseline); CCSF, which spends the same
    evaluations on a second score function, is not: the reduction comes from MVD, not from the combination."""
    problem = Problem.default(FUNCTIONS["rosenbrock"], 10)
    N, M, K = 10, 1, 3
    budget = 2 * (N + M * K)
    dist = problem.dist(copies=4000)
    exact = problem.exact()
    ratios = {}
    for cls in (sg.CCMVD, sg.CCSF):
        est = cls(n_samples=N, samples_per_dim=M, k=K)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            est.estimate(problem.function, dist, generator=gen, params=("loc",))
        g = est.estimate(problem.function, dist, generator=gen, params=("loc",))
        assert g.n_evals == budget
        sf = sg.ScoreFunction(budget, baseline="loo", antithetic=True).estimate(
            problem.function, dist, generator=gen, params=("loc",))
        comps = g.info["components"]["loc"]                       # [R, K]
        err_h = (g.grad["loc"] - exact).pow(2).gather(-1, comps).mean()
        err_sf = (sf.grad["loc"] - exact).pow(2).gather(-1, comps).mean()
        ratios[cls.__name__] = float(err_h / err_sf)
    assert ratios["CCMVD"] < 0.6, ratios
    assert ratios["CCSF"] > 0.8, ratios


def test_variance_selection_picks_the_noisiest_components() -> None:
    """The score function's variance for loc_i grows like 1/σ_i²: with σ falling along the coordinates,
    selection by running variance settles on the last three."""
    loc = torch.ones(10, dtype=torch.float64)
    dist = sg.Normal(loc, torch.linspace(1.0, 0.05, 10, dtype=torch.float64))
    est = sg.CCMVD(n_samples=20, samples_per_dim=1, k=3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        g = est.estimate(FUNCTIONS["sphere"], dist, generator=gen, params=("loc",))
    assert sorted(g.info["components"]["loc"].tolist()) == [7, 8, 9]


def test_batch_weights_need_two_samples_and_are_computed_from_the_current_samples() -> None:
    with pytest.raises(sg.BudgetError, match="weights='batch' .* needs samples_per_dim >= 2; got 1"):
        sg.CCMVD(n_samples=4, samples_per_dim=1, k=2, weights="batch")
    problem = Problem.default(FUNCTIONS["rosenbrock"], 6)
    est = sg.CCMVD(n_samples=4, samples_per_dim=2, k=2, weights="batch")
    g = est.estimate(problem.function, problem.dist(copies=3), generator=torch.Generator().manual_seed(0),
                     params=("loc",))
    first, second = g.info["first"], g.info["second"]
    idx = g.info["components"]["loc"]
    va = first.variance["loc"].gather(-1, idx)
    vb = second.variance["loc"].gather(-1, idx)
    assert torch.allclose(g.info["weight_sf"]["loc"], vb / (va + vb))


def test_counts_and_n_evals() -> None:
    dist = sg.Normal(torch.zeros(10), torch.ones(10))
    assert sg.CCMVD(n_samples=5, samples_per_dim=2, k=3).n_evals(dist, ("loc",)) == 2 * (5 + 2 * 3)
    assert sg.CCMVD(n_samples=5, samples_per_dim=2, k=3).n_evals(dist) == 2 * 5 + 2 * 2 * 3 * 2
    assert sg.CCSF(n_samples=5, samples_per_dim=1, k=3).n_evals(dist, ("loc",)) == 2 * (5 + 3)
    plan = sg.CCMVD(n_samples=5, samples_per_dim=2, k=3).plan(dist, torch.Generator().manual_seed(0), ("loc",))
    assert plan.points.shape == (22, 10)


def test_auto_allocates_more_pairs_to_noisier_components() -> None:
    """On the ellipsoid (MVD variance grows with the weight), Auto's pairs follow the Neyman allocation."""
    problem = Problem.default(FUNCTIONS["ellipsoid"], 10)
    est = sg.Auto(200, explore=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        g = est.estimate(problem.function, problem.dist(), generator=gen, params=("loc",))
    pairs = g.info["pairs"]["loc"]
    assert int(pairs.sum()) * 2 + g.info["decision"]["n_sf"] == 200
    assert pairs[-1] > 3 * pairs[0]


def test_mvd_dims_with_repeats_give_more_samples_to_a_component() -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=REPEATS)
    g = sg.MeasureValued(1, dims=[0, 0, 0, 2]).estimate(prob.f, dist, generator=torch.Generator().manual_seed(0),
                                                        params=("loc",))
    assert g.n_evals == 8
    exact = prob.exact_grad()["loc"]
    sel = g.grad["loc"][:, [0, 2]]
    assert z_test(sel, exact[[0, 2]]).max_abs_z < Z_THRESHOLD
    single = sg.MeasureValued(1, dims=[0]).estimate(prob.f, dist, generator=torch.Generator().manual_seed(1),
                                                    params=("loc",))
    ratio = float(g.grad["loc"][:, 0].var() / single.grad["loc"][:, 0].var())
    assert 0.28 < ratio < 0.39     # three pairs: a third of the variance
    assert torch.isfinite(g.variance["loc"][:, 0]).all() and torch.isnan(g.variance["loc"][:, 2]).all()


@pytest.mark.parametrize("make", [lambda: sg.CCMVD(3, 1, 2), lambda: sg.CCSF(3, 1, 2), lambda: sg.Auto(20)])
def test_state_round_trips_through_a_checkpoint(tmp_path, make) -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=4)
    a = make()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        a.estimate(prob.f, dist, generator=gen)
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b = make()
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    ga = a.estimate(prob.f, dist, generator=torch.Generator().manual_seed(5))
    gb = b.estimate(prob.f, dist, generator=torch.Generator().manual_seed(5))
    for p in ga.grad:
        assert torch.equal(ga.grad[p], gb.grad[p]) and torch.equal(ga.variance[p], gb.variance[p])


def test_a_checkpoint_from_before_the_lagged_average_still_loads() -> None:
    prob = PROBLEMS["normal"]
    a = sg.CCMVD(3, 1, 2)
    for _ in range(3):
        a.estimate(prob.f, prob.dist(copies=4), generator=torch.Generator().manual_seed(0))
    state = {name: {k: v for k, v in s.items() if k != "lagged"} for name, s in a.state_dict().items()}
    b = sg.CCMVD(3, 1, 2)
    b.load_state_dict(state)
    g = b.estimate(prob.f, prob.dist(copies=4), generator=torch.Generator().manual_seed(5))
    assert all(bool(torch.isfinite(v).all()) for v in g.variance.values())


@pytest.mark.parametrize("make", [lambda: sg.CCMVD(3, 1, 2), lambda: sg.Auto(20)])
def test_hybrids_work_with_the_serial_evaluator_and_expectation(make) -> None:
    prob = PROBLEMS["normal"]
    a = make().estimate(prob.f, prob.dist(), generator=torch.Generator().manual_seed(2))
    b = make().estimate(prob.f, prob.dist(), generator=torch.Generator().manual_seed(2),
                        evaluator=sg.evaluators.Serial())
    for p in a.grad:
        assert torch.allclose(a.grad[p], b.grad[p])
    loc = prob.params["loc"].clone().requires_grad_(True)
    loss = sg.expectation(prob.f, sg.Normal(loc, prob.params["scale"]), make(),
                          generator=torch.Generator().manual_seed(2))
    loss.backward()
    # the same estimator, fresh, with the same seed, on the same parameter: the gradient is its estimate
    direct = make().estimate(prob.f, prob.dist(), generator=torch.Generator().manual_seed(2), params=("loc",))
    assert torch.equal(loc.grad, direct.grad["loc"])
    assert float(loss.detach()) == pytest.approx(float(direct.value))


@pytest.mark.parametrize("make, error, match", [
    (lambda: sg.CCMVD(0, 1, 1), sg.BudgetError, r"n_samples: CCMVD needs an int >= 1; got 0"),
    (lambda: sg.CCMVD(2, 1, 0), sg.BudgetError, r"k: CCMVD needs an int >= 1; got 0"),
    (lambda: sg.CCMVD(2, 1, 1, select="max"), sg.InvalidArgumentError, r"select: got 'max'"),
    (lambda: sg.CCMVD(2, 1, 1, weights="mean"), sg.InvalidArgumentError, r"weights: got 'mean'"),
    (lambda: sg.CCSF(2, 1, 1), sg.BudgetError, r"M·K antithetic pairs .* got M·K = 1"),
    (lambda: sg.Auto(1), sg.BudgetError, r"budget: Auto needs at least 2 evaluations per estimate; got 1"),
])
def test_bad_hybrid_arguments(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_k_larger_than_the_dimension_and_unsupported_families() -> None:
    f = lambda x: x.sum(-1)  # noqa: E731
    with pytest.raises(sg.InvalidArgumentError, match=r"k: CCMVD chooses k components per parameter, but "
                                                     r"Normal.loc has 3; got k=4"):
        sg.CCMVD(2, 1, 4).estimate(f, sg.Normal(torch.zeros(3), 1.0), params=("loc",))
    with pytest.raises(sg.UnsupportedError, match=r"score function is not valid for Uniform.high"):
        sg.CCMVD(2, 1, 1).estimate(f, sg.Uniform(torch.ones(3)), params=("high",))
    with pytest.raises(sg.UnsupportedError, match=r"no decomposition for Gamma.concentration"):
        sg.CCMVD(2, 1, 1).estimate(f, sg.Gamma(torch.ones(3), torch.ones(3)), params=("concentration",))
    with pytest.raises(sg.BudgetError, match=r"budget: Auto needs at least 6 evaluations .* Uniform \['high'\]; "
                                             r"got 4"):
        sg.Auto(4).estimate(f, sg.Uniform(torch.ones(3)), params=("high",))


@pytest.mark.parametrize("mix", ["pure", "score function", "mixed"])
def test_water_fill_matches_greedy_allocation(mix) -> None:
    """Auto's pair allocation is optimal: its predicted variance equals that of handing out pairs one at a time
    to the largest marginal gain (optimal for convex decreasing terms), with the same totals and lower bounds."""
    from stochgrad.estimators.auto import _term, water_fill

    g = torch.Generator().manual_seed(3)
    copies, J, total = 5, 9, 23
    A = torch.rand(copies, J, generator=g, dtype=torch.float64) * 5 + 0.05
    if mix == "pure":
        A = torch.full_like(A, math.inf)
    elif mix == "mixed":
        A[torch.rand(copies, J, generator=g) < 0.4] = math.inf
    b = torch.rand(copies, J, generator=g, dtype=torch.float64) * 3 + 0.01
    lower = torch.isinf(A).to(torch.float64)
    m = water_fill(A, b, lower, total)
    assert torch.equal(m.sum(-1), torch.full((copies,), total)) and bool((m >= lower.long()).all())
    greedy = lower.long().clone()
    for c in range(copies):
        while int(greedy[c].sum()) < total:
            gain = _term(A[c], b[c], greedy[c]) - _term(A[c], b[c], greedy[c] + 1)
            greedy[c, int(gain.argmax())] += 1
    assert torch.allclose(_term(A, b, m).sum(-1), _term(A, b, greedy).sum(-1), rtol=1e-12)
