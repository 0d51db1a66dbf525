"""Structured evaluation: a separable f takes a path that never builds the MVD points, with the same result."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from cases import CASES, PROBLEMS
from stochgrad.estimators import base as estimator_base
from stochgrad.estimators import measure_valued
from stochgrad.lab.functions import FUNCTIONS

T = torch.float64


@pytest.mark.parametrize("name", ["sphere", "rastrigin", "styblinski-tang"])
@pytest.mark.parametrize("M", [1, 3])
def test_separable_path_gives_the_general_result(name: str, M: int) -> None:
    fn = FUNCTIONS[name]
    dist = sg.Normal(fn.default_loc(12).expand(3, 12), torch.full((3, 12), 0.2, dtype=T))
    fast = sg.MeasureValued(M).estimate(fn, dist, generator=torch.Generator().manual_seed(4))
    slow = sg.MeasureValued(M).estimate(lambda x: fn(x), dist, generator=torch.Generator().manual_seed(4))
    for p in ("loc", "scale"):
        assert torch.allclose(fast.grad[p], slow.grad[p], rtol=1e-10, atol=1e-10)
    assert torch.allclose(fast.values, slow.values, rtol=1e-12)
    assert fast.n_evals == slow.n_evals


def test_separable_wrapper_and_generator_state() -> None:
    w = torch.linspace(1, 2, 6, dtype=T)
    f = sg.Separable(lambda v, i: w[i] * v * v, name="weighted")
    x = torch.randn(4, 6, dtype=T, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(f(x), (w * x * x).sum(-1))
    dist = sg.Normal(torch.zeros(6, dtype=T), 0.5)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    sg.MeasureValued(2).estimate(f, dist, generator=g1)
    sg.MeasureValued(2).estimate(lambda x: f(x), dist, generator=g2)
    assert torch.equal(g1.get_state(), g2.get_state())      # later estimates see the same random numbers


def test_large_point_sets_are_evaluated_in_chunks(monkeypatch) -> None:
    monkeypatch.setattr(estimator_base, "EVAL_CHUNK_ELEMENTS", 100)
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return (x * x).sum(-1)

    dist = sg.Normal(torch.zeros(20, dtype=T), 1.0)
    g = sg.ScoreFunction(40).estimate(f, dist, generator=torch.Generator().manual_seed(0), params=("loc",))
    assert max(calls) == 5 and sum(calls) == 40 and g.n_evals == 40
    with pytest.raises(sg.EvaluationError, match=r"shape \[5, 1\]"):
        sg.ScoreFunction(40).estimate(lambda x: (x * x).sum(-1, keepdim=True), dist,
                                      generator=torch.Generator().manual_seed(0), params=("loc",))
    calls.clear()
    g = sg.MeasureValued(1).estimate(f, dist, generator=torch.Generator().manual_seed(0), params=("loc",))
    assert max(calls) == 4 and sum(calls) == 40 and g.n_evals == 40     # MVD streams + and − rows in pairs


@pytest.mark.parametrize("M", [1, 3])
def test_separable_path_with_a_shared_base_gives_the_general_result(M: int) -> None:
    fn = FUNCTIONS["rastrigin"]
    dist = sg.Normal(fn.default_loc(12).expand(3, 12), torch.full((3, 12), 0.2, dtype=T))
    dims = torch.tensor([[0, 5, 0, 11], [2, 2, 2, 3], [7, 8, 9, 10]])       # repeats get their own bases
    est = sg.MeasureValued(M, shared_base=True, dims={"loc": dims, "scale": None})
    fast = est.estimate(fn, dist, generator=torch.Generator().manual_seed(4))
    slow = est.estimate(lambda x: fn(x), dist, generator=torch.Generator().manual_seed(4))
    for p in ("loc", "scale"):
        assert torch.allclose(fast.grad[p], slow.grad[p], rtol=1e-10, atol=1e-10)
        assert torch.allclose(fast.variance[p], slow.variance[p], rtol=1e-8, atol=1e-12, equal_nan=True)
    assert torch.allclose(fast.values, slow.values, rtol=1e-12)


def test_shared_base_points_share_everything_but_their_coordinate() -> None:
    dist = sg.Normal(torch.zeros(2, 5, dtype=T), 1.0)
    dims = torch.tensor([[1, 3, 1, 1], [0, 0, 4, 2]])
    M = 2
    plan = sg.MeasureValued(M, shared_base=True, dims=dims).plan(dist, torch.Generator().manual_seed(0), ["loc"])
    pts = plan.points.view(2, M, 4, 2, 5)
    assert torch.equal(pts[0], pts[1].clone().scatter_(-1, dims.T.expand(M, 4, 2).unsqueeze(-1),
                                                       pts[0].gather(-1, dims.T.expand(M, 4, 2).unsqueeze(-1))))
    repeat = torch.tensor([[0, 0, 1, 2], [0, 1, 0, 0]])                      # which listing of its component
    for m in range(M):
        for b in range(2):
            for j1 in range(4):
                for j2 in range(4):
                    keep = torch.ones(5, dtype=torch.bool)
                    keep[dims[b, [j1, j2]]] = False
                    same = torch.equal(pts[0, m, j1, b][keep], pts[0, m, j2, b][keep])
                    assert same == bool(repeat[b, j1] == repeat[b, j2]), (m, b, j1, j2)


def test_shared_base_keeps_each_components_variance() -> None:
    """Sharing the base changes only the covariance between components: per component, the spread of the
    estimates and the estimate's own variance estimate match the per-component-base estimator."""
    def fn(x):
        return x.sum(-1) ** 2 + x[..., 0] * x[..., 4]        # every pair of components is coupled

    n = 20000
    dist = sg.Normal(torch.zeros(n, 6, dtype=T), 0.3)
    dims = torch.tensor([0, 1, 1, 4, 5, 5])
    out = {}
    for shared in (False, True):
        g = sg.MeasureValued(2, shared_base=shared, dims=dims).estimate(
            fn, dist, generator=torch.Generator().manual_seed(7), params=("loc",))
        out[shared] = g
    for j in (0, 1, 4, 5):
        v_ind, v_sh = out[False].grad["loc"][:, j].var(), out[True].grad["loc"][:, j].var()
        assert abs(float(v_sh / v_ind) - 1) < 0.05, (j, float(v_sh), float(v_ind))
        mean_est = out[True].variance["loc"][:, j].mean()
        assert abs(float(mean_est / v_sh) - 1) < 0.05, (j, float(mean_est), float(v_sh))
    g_ind, g_sh = out[False].grad["loc"], out[True].grad["loc"]
    corr = lambda g: torch.corrcoef(g[:, [0, 1]].T)[0, 1]  # noqa: E731
    assert abs(float(corr(g_ind))) < 0.03 and abs(float(corr(g_sh))) > 0.1
    assert abs(float(torch.corrcoef(g_ind[:, [4, 5]].T)[0, 1])) < 0.03


@pytest.mark.parametrize("case", [c for c in CASES if c.estimator in ("mvd", "mvd-shared")], ids=lambda c: c.id)
def test_streamed_evaluation_gives_the_materialised_result(case, monkeypatch) -> None:
    """In-process MVD calls f on small blocks built one at a time; with 3 copies, 2 samples per component and
    repeated components it gives exactly the numbers of plan + f(points) + combine, and the generator ends in
    the same state."""
    monkeypatch.setattr(measure_valued, "STREAM_ELEMENTS", 8)
    prob = PROBLEMS[case.problem]
    dist = prob.dist(copies=3)
    n = dist.n_components(case.param)
    dims = torch.tensor([[0, n - 1, 0], [n - 1, n - 1, 0], [0, 0, 0]])
    est = sg.MeasureValued(2, shared_base=case.estimator == "mvd-shared", dims=dims)
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return prob.f(x)

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    streamed = est.estimate(f, dist, generator=g1, params=(case.param,))
    plan = est.plan(dist, g2, (case.param,))
    whole = plan.combine(prob.f(plan.points))
    assert len(calls) > 1 and sum(calls) == plan.n_evals
    assert torch.equal(streamed.values, whole.values)
    assert torch.equal(streamed.grad[case.param], whole.grad[case.param])
    assert torch.equal(streamed.variance[case.param].nan_to_num(-1), whole.variance[case.param].nan_to_num(-1))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_streamed_evaluation_names_the_bad_point() -> None:
    """Indices in the error are those of the full set of points, though f saw them in blocks."""
    dist = sg.Normal(torch.zeros(2000, dtype=T), 1.0)

    def f(x):
        return torch.where(x[:, 1500] > 0.0, torch.nan, (x * x).sum(-1))

    plan = sg.MeasureValued(1).plan(dist, torch.Generator().manual_seed(0), ("loc",))
    bad = (plan.points[:, 1500] > 0.0).nonzero().flatten()[:5].tolist()
    with pytest.raises(sg.EvaluationError, match=rf"point index\(es\) \[{', '.join(map(str, bad))}\]"):
        sg.MeasureValued(1).estimate(f, dist, generator=torch.Generator().manual_seed(0), params=("loc",))


MVD_PARAMS = {problem: tuple(c.param for c in CASES if c.problem == problem and c.estimator == "mvd")
              for problem in sorted({c.problem for c in CASES if c.estimator == "mvd"})}


@pytest.mark.parametrize(("M", "shared"), [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("problem", [p for p in MVD_PARAMS if not PROBLEMS[p].dist().param_coordinate_ndim])
def test_small_estimates_take_one_call_with_the_planned_numbers(problem, M, shared) -> None:
    """Small in-process MVD estimates of every component build all points in one buffer and call f once; the
    numbers are exactly those of plan + f(points) + combine, and the generator ends in the same state.
    (Categorical logits, several components per coordinate, stream instead.)"""
    prob = PROBLEMS[problem]
    dist = prob.dist(copies=3)
    params = MVD_PARAMS[problem]
    est = sg.MeasureValued(M, shared_base=shared)
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return prob.f(x)

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    fast = est.estimate(f, dist, generator=g1, params=params)
    plan = est.plan(dist, g2, params)
    whole = plan.combine(prob.f(plan.points))
    assert calls == [plan.n_evals]
    assert torch.equal(fast.values, whole.values)
    assert torch.equal(fast.value.nan_to_num(-1), whole.value.nan_to_num(-1))
    for p in params:
        assert torch.equal(fast.grad[p], whole.grad[p])
        assert torch.equal(fast.variance[p].nan_to_num(-1), whole.variance[p].nan_to_num(-1))
        assert torch.equal(fast.info["components"][p], whole.info["components"][p])
    assert fast.estimated is None and whole.estimated is None
    assert torch.equal(g1.get_state(), g2.get_state())


def test_small_estimate_names_the_bad_point() -> None:
    dist = sg.Normal(torch.zeros(5, dtype=T), 1.0)

    def f(x):
        return torch.where(x[:, 3] > 0.0, torch.inf, (x * x).sum(-1))

    plan = sg.MeasureValued(1).plan(dist, torch.Generator().manual_seed(0))
    bad = (plan.points[:, 3] > 0.0).nonzero().flatten()[:5].tolist()
    with pytest.raises(sg.EvaluationError, match=rf"point index\(es\) \[{', '.join(map(str, bad))}\]"):
        sg.MeasureValued(1).estimate(f, dist, generator=torch.Generator().manual_seed(0))
    with pytest.raises(sg.EvaluationError, match=r"shape \[5\]"):
        sg.MeasureValued(1).estimate(lambda x: x[:5].sum(-1), dist, generator=torch.Generator().manual_seed(0))


def test_small_estimate_accepts_strided_values() -> None:
    dist = sg.Normal(torch.zeros(3, 4, dtype=T), 0.5)

    def f(x):
        v = (x * x).sum(-1)
        return torch.stack([v, -v], -1)[..., 0]          # a strided view, not contiguous

    g1 = sg.MeasureValued(1).estimate(f, dist, generator=torch.Generator().manual_seed(0))
    g2 = sg.MeasureValued(1).estimate(f, dist, generator=torch.Generator().manual_seed(0),
                                      evaluator=sg.evaluators.Vectorized())
    assert torch.equal(g1.grad["loc"], g2.grad["loc"]) and torch.equal(g1.values, g2.values)


def test_estimated_mask_lists_every_parameter_when_one_is_partial() -> None:
    dist = sg.Normal(torch.zeros(2, 5, dtype=T), 0.5)
    est = sg.MeasureValued(1, dims={"loc": [0, 3]})
    g = est.estimate(lambda x: (x * x).sum(-1), dist, generator=torch.Generator().manual_seed(0))
    assert set(g.estimated) == {"loc", "scale"}
    assert g.estimated["scale"].shape == (2, 5) and bool(g.estimated["scale"].all())
    assert g.estimated["loc"][:, [0, 3]].all() and not g.estimated["loc"][:, [1, 2, 4]].any()
