"""An f that edits its points in place cannot change any estimate: every registered estimator, on every
family and parameter it supports, gives exactly the estimate of the same f written without the edit."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from cases import PROBLEMS
from stochgrad.estimators.registry import estimator_names, get_spec, make_estimator, minimum_budget

CASES = [(problem, param, name) for problem, prob in PROBLEMS.items() for param in prob.params
         for name in estimator_names() if get_spec(name).supports(type(prob.dist()), param)]


def _edit(x: torch.Tensor, in_place: bool) -> torch.Tensor:
    """Clamp the points from above, changing many of them (Bernoulli ones, large counts, the upper tail)."""
    top = 1 if not x.is_floating_point() else 0.5
    return x.clamp_(max=top) if in_place else x.clamp(max=top)


@pytest.mark.parametrize("problem, param, name", CASES, ids=[":".join(c) for c in CASES])
def test_an_f_that_edits_its_points_in_place_changes_nothing(problem: str, param: str, name: str) -> None:
    prob = PROBLEMS[problem]
    dist = prob.dist(copies=3)
    budget = max(24, minimum_budget(name, dist, (param,)))
    grads = []
    for in_place in (False, True):
        est = make_estimator(name, budget, dist, (param,))
        f = lambda x, in_place=in_place: prob.f(_edit(x, in_place))  # noqa: E731
        gen = torch.Generator().manual_seed(0)
        for _ in range(2 if name in ("ccmvd", "ccsf", "auto") else 1):   # stateful: the second estimate too
            g = est.estimate(f, dist, generator=gen, params=(param,))
        grads.append(g.grad[param])
    assert torch.equal(grads[0], grads[1]), (grads[0], grads[1])


@pytest.mark.parametrize("name", estimator_names())
def test_plan_and_combine_are_immune_too(name: str) -> None:
    """The two-phase interface: f edits ``plan.points`` in place before ``combine``."""
    prob = PROBLEMS["exponential"]
    dist = prob.dist(copies=2)
    if not get_spec(name).supports(type(dist), "rate"):
        pytest.skip("unsupported")
    out = []
    for in_place in (False, True):
        plan = make_estimator(name, 24, dist).plan(dist, torch.Generator().manual_seed(0))
        out.append(plan.combine(prob.f(_edit(plan.points, in_place))).grad["rate"])
    assert torch.equal(out[0], out[1])


def test_the_issue_example_gives_the_exact_gradient() -> None:
    """f = x.clamp_(max=1).sum(-1) under Exponential(1.5): E f = (1 − e^(−λ))/λ, so d/dλ at 1.5 is
    (e^(−λ)(λ + 1) − 1)/λ² = −0.1968; the score function used to give about −0.048."""
    lam = 1.5
    exact = (torch.exp(torch.tensor(-lam, dtype=torch.float64)) * (lam + 1) - 1) / lam ** 2
    dist = sg.Exponential(torch.full((200_000, 1), lam, dtype=torch.float64))
    g = sg.ScoreFunction(8, baseline="loo").estimate(lambda x: x.clamp_(max=1).sum(-1), dist,
                                                     generator=torch.Generator().manual_seed(0))
    mean, se = g.grad["rate"].mean(), g.grad["rate"].std() / 200_000 ** 0.5
    assert abs(float(mean - exact)) < 5 * float(se), (float(mean), float(exact))


def test_a_separable_f_whose_term_edits_its_input() -> None:
    """The structured MVD path reads the base coordinate before the term sees the base (the differences
    f⁺ − f⁻ never depended on it; the value E f, from the side distributed as p_θ, did)."""
    dist = sg.Exponential(torch.full((4, 3), 1.5))
    pure = sg.Separable(lambda v, i: (v * 2).square())
    edits = sg.Separable(lambda v, i: v.mul_(2).square())
    for shared in (False, True):
        a, b = (sg.MeasureValued(2, shared_base=shared).estimate(f, dist, generator=torch.Generator().manual_seed(0))
                for f in (pure, edits))
        assert torch.allclose(a.grad["rate"], b.grad["rate"], atol=1e-5), shared
        assert torch.allclose(a.value, b.value, atol=1e-5), shared
