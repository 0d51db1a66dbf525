"""Every registered estimator, built by name as the lab, the optimiser and the trainer build them, on every
(family, parameter) its spec says it supports: shapes and dtypes, determinism, plan + combine = estimate, its
budget, named errors where it does not apply, and the z-test of unbiasedness for those not marked biased (by
the spec's flag; those marked biased are shown to be caught by the same test)."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from cases import PROBLEMS, Z_THRESHOLD, z_test
from stochgrad.estimators.registry import estimator_names, get_spec, make_estimator, minimum_budget

BUDGET = 24
SUPPORTED = [(p, param, name) for p, prob in PROBLEMS.items() for param in prob.params for name in estimator_names()
             if get_spec(name).supports(type(prob.dist()), param)]
UNSUPPORTED = [(p, param, name) for p, prob in PROBLEMS.items() for param in prob.params
               for name in estimator_names() if not get_spec(name).supports(type(prob.dist()), param)]


def _estimator(name: str, dist: sg.Family, param: str, budget: int = BUDGET) -> sg.Estimator:
    return make_estimator(name, max(budget, minimum_budget(name, dist, (param,))), dist, (param,))


def _f(prob, name):
    if name == "pathwise":
        return prob.f
    return lambda x: prob.f(x.detach())


@pytest.mark.parametrize("problem, param, name", SUPPORTED, ids=[":".join(c) for c in SUPPORTED])
def test_shapes_budget_determinism_and_plan_combine(problem: str, param: str, name: str) -> None:
    prob = PROBLEMS[problem]
    dist = prob.dist(copies=3)
    est = _estimator(name, dist, param)
    runs = [_estimator(name, dist, param).estimate(_f(prob, name), dist, torch.Generator().manual_seed(s),
                                                  params=(param,)) for s in (4, 4, 5)]
    g = runs[0]
    shape = dist.param(param).shape
    assert g.grad[param].shape == shape and g.variance[param].shape == shape
    assert bool(torch.isfinite(g.grad[param]).all())
    assert g.n_evals <= max(BUDGET, minimum_budget(name, dist, (param,)))
    assert g.values.shape == (g.n_evals, 3)
    assert torch.equal(runs[0].grad[param], runs[1].grad[param])
    assert not torch.equal(runs[0].grad[param], runs[2].grad[param])
    plan = est.plan(dist, torch.Generator().manual_seed(4), (param,))
    if not plan.requires_grad_values:
        assert torch.equal(plan.combine(prob.f(plan.points)).grad[param], g.grad[param])
        used = plan.used(prob.f(plan.points))
        assert used is None or used.shape == (plan.n_evals, 3)


@pytest.mark.parametrize("name", estimator_names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_dtype_is_kept(name: str, dtype: torch.dtype) -> None:
    dist = sg.Normal(torch.zeros(2, 5, dtype=dtype), torch.full((2, 5), 0.3, dtype=dtype))
    est = _estimator(name, dist, "loc", 40)
    g = est.estimate(lambda x: (x - 1.0).square().sum(-1), dist, torch.Generator().manual_seed(0), params=("loc",))
    assert g.grad["loc"].dtype == dtype and g.variance["loc"].dtype == dtype and g.values.dtype == dtype


@pytest.mark.parametrize("problem, param, name", UNSUPPORTED, ids=[":".join(c) for c in UNSUPPORTED])
def test_unsupported_parameters_raise_a_named_error(problem: str, param: str, name: str) -> None:
    prob = PROBLEMS[problem]
    dist = prob.dist()
    with pytest.raises(sg.UnsupportedError, match=rf"{type(dist).__name__}\.{param}|symmetric"):
        make_estimator(name, 40, dist, (param,)).estimate(prob.f, dist, torch.Generator().manual_seed(0),
                                                           params=(param,))


NORMAL = [(param, name) for param, name in ((p, n) for p in ("loc", "scale") for n in estimator_names())
          if get_spec(name).supports(sg.Normal, param)]


@pytest.mark.parametrize("param, name", [c for c in NORMAL if not get_spec(c[1]).biased],
                         ids=[":".join(c) for c in NORMAL if not get_spec(c[1]).biased])
def test_estimators_not_marked_biased_are_unbiased(param: str, name: str) -> None:
    """The second estimate of each copy (stateful estimators decide from the first, an independent one)."""
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=20000)
    est = _estimator(name, dist, param)
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        g = est.estimate(_f(prob, name), dist, gen, params=(param,))
    result = z_test(g.grad[param], prob.exact_grad()[param])
    assert result.max_abs_z < Z_THRESHOLD, (name, param, result.z.tolist())


@pytest.mark.parametrize("param, name", [c for c in NORMAL if get_spec(c[1]).biased],
                         ids=[":".join(c) for c in NORMAL if get_spec(c[1]).biased])
def test_estimators_marked_biased_are_caught_by_the_same_test(param: str, name: str) -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=20000)
    g = _estimator(name, dist, param, 8).estimate(prob.f, dist, torch.Generator().manual_seed(2), params=(param,))
    assert z_test(g.grad[param], prob.exact_grad()[param]).max_abs_z > Z_THRESHOLD
