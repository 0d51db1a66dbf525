"""ARS's top-b directions as an estimator: its selection, its agreement with the antithetic score function when
b = N, per-copy selection, named errors, and a bias the registry declares (and the z-test sees)."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from cases import PROBLEMS, Z_THRESHOLD, z_test
from stochgrad.estimators.registry import get_spec, make_estimator

T = torch.float64


def _f(x):
    return -((x - 1.0) ** 2).sum(-1) + x[..., 0] ** 3


def test_ars_with_all_directions_is_the_antithetic_score_function() -> None:
    dist = sg.Normal(torch.zeros(5, dtype=T), torch.full((5,), 0.3, dtype=T))
    ars = sg.ARS(directions=6).estimate(_f, dist, torch.Generator().manual_seed(3))
    sf = sg.ScoreFunction(12, antithetic=True).estimate(_f, dist, torch.Generator().manual_seed(3))
    assert torch.allclose(ars.grad["loc"], sf.grad["loc"])
    assert torch.allclose(ars.variance["loc"], sf.variance["loc"])
    assert torch.equal(ars.value, sf.value) and ars.n_evals == 12


def test_ars_keeps_the_top_b_pairs_by_their_better_value() -> None:
    values = torch.tensor([1.0, 5.0, 2.0, 0.0, 3.0, -1.0, 0.5, 4.0], dtype=T)   # pairs (1,3) (5,-1) (2,0.5) (0,4)
    dist = sg.Normal(torch.zeros(3, dtype=T), torch.full((3,), 0.5, dtype=T))
    plan = sg.ARS(4, top=2).plan(dist, torch.Generator().manual_seed(0))
    assert plan.used(values).tolist() == [False, True, False, True, False, True, False, True]
    g = plan.combine(values)
    k = g.info["selected"]
    assert k.tolist() == [1, 3]
    expect = ((values[:4] - values[4:])[k].unsqueeze(-1) * plan.eps[k]).mean(0) / (2 * 0.5)
    assert torch.equal(g.grad["loc"], expect)
    ties = torch.tensor([2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=T)   # ties go to the lower index
    assert plan.selected(ties).tolist() == [0, 1]
    with pytest.raises(sg.InvalidArgumentError, match=r"top: ARS uses b <= N = 4 directions; got 5"):
        sg.ARS(4, top=5)


def test_ars_keeps_the_same_pairs_when_handed_minus_f() -> None:
    """SearchGradient hands its estimator values to minimise: with best="min" ARS keeps the best returns."""
    dist = sg.Normal(torch.zeros(3, dtype=T), torch.full((3,), 0.5, dtype=T))
    values = torch.tensor([1.0, 5.0, 2.0, 0.0, 3.0, -1.0, 0.5, 4.0], dtype=T)
    up = sg.ARS(4, top=2).plan(dist, torch.Generator().manual_seed(0)).combine(values)
    down = sg.ARS(4, top=2, best="min").plan(dist, torch.Generator().manual_seed(0)).combine(-values)
    assert up.info["selected"].tolist() == down.info["selected"].tolist() == [1, 3]
    assert torch.allclose(up.grad["loc"], -down.grad["loc"])


def test_copies_select_their_own_pairs() -> None:
    dist = sg.Normal(torch.linspace(-1, 1, 12, dtype=T).reshape(4, 3), torch.full((4, 3), 0.4, dtype=T))
    plan = sg.ARS(5, top=2).plan(dist, torch.Generator().manual_seed(1))
    values = _f(plan.points)                                                   # [10, 4]
    g = plan.combine(values)
    for c in range(4):
        one = sg.ARS(5, top=2).plan(sg.Normal(dist.loc[c], dist.scale[c]), None)
        one.eps, one.points = plan.eps[:, c], plan.points[:, c]
        gc = one.combine(values[:, c])
        assert torch.equal(g.info["selected"][:, c], gc.info["selected"])
        assert torch.allclose(g.grad["loc"][c], gc.grad["loc"], rtol=1e-14)
        assert torch.equal(plan.used(values)[:, c], one.used(values[:, c]))


def test_ars_names_what_it_cannot_estimate() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(sg.UnsupportedError, match=r"ARS: estimates Normal.loc only; got Exponential.rate"):
        sg.ARS(4).estimate(lambda x: x.sum(-1), sg.Exponential(torch.ones(3)), gen)
    with pytest.raises(sg.UnsupportedError, match=r"ARS: estimates Normal.loc only; got Normal.scale"):
        sg.ARS(4).estimate(lambda x: x.sum(-1), sg.Normal(torch.zeros(3), 1.0), gen, params=("loc", "scale"))
    with pytest.raises(sg.BudgetError, match="directions: ARS needs an int >= 1; got 0"):
        sg.ARS(0)
    with pytest.raises(sg.InvalidArgumentError, match="best: got 'mean'"):
        sg.ARS(2, best="mean")
    with pytest.raises(sg.InvalidArgumentError, match=r"top: estimator mvd takes no such option"):
        make_estimator("mvd", 12, sg.Normal(torch.zeros(3), 1.0), top=2)


def test_the_registry_marks_ars_biased_and_the_z_test_agrees() -> None:
    """b < N keeps the directions that looked best: the mean estimate is not the gradient. b = N is unbiased."""
    assert get_spec("ars").biased and get_spec("ars").options == ("top",)
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=20000)
    exact = prob.exact_grad()["loc"]
    gen = torch.Generator().manual_seed(0)
    biased = make_estimator("ars", 8, dist, ("loc",)).estimate(prob.f, dist, gen, params=("loc",))
    assert z_test(biased.grad["loc"], exact).max_abs_z > Z_THRESHOLD
    fair = sg.ARS(4).estimate(prob.f, dist, gen, params=("loc",))
    assert z_test(fair.grad["loc"], exact).max_abs_z < Z_THRESHOLD
