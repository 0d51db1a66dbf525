"""ARS's top-b directions as an estimator: its selection, its agreement with the antithetic score function when
b = N, per-copy selection, named errors, and a bias the registry declares (and the z-test sees)."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from cases import PROBLEMS, Z_THRESHOLD, z_test
from stochgrad.estimators.ars import orthogonal_gaussian
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
    assert get_spec("ars").biased and get_spec("ars").options == ("top", "orthogonal")
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=20000)
    exact = prob.exact_grad()["loc"]
    gen = torch.Generator().manual_seed(0)
    biased = make_estimator("ars", 8, dist, ("loc",)).estimate(prob.f, dist, gen, params=("loc",))
    assert z_test(biased.grad["loc"], exact).max_abs_z > Z_THRESHOLD
    fair = sg.ARS(4).estimate(prob.f, dist, gen, params=("loc",))
    assert z_test(fair.grad["loc"], exact).max_abs_z < Z_THRESHOLD


def test_orthogonal_directions_are_orthogonal_within_a_copy_and_each_a_standard_normal() -> None:
    gen = torch.Generator().manual_seed(0)
    eps = orthogonal_gaussian(7, (3, 5), gen)                                  # 7 directions, 3 copies, D = 5
    for c in range(3):
        block = eps[:5, c]
        gram = block @ block.T
        assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros(5, 5, dtype=T), atol=1e-12)
        assert abs(float(eps[5, c] @ eps[6, c])) < 1e-12                      # the next block is its own frame,
        assert abs(float(eps[4, c] @ eps[5, c])) > 1e-6                       # not orthogonal to the first
    many = orthogonal_gaussian(5, (40000, 5), gen)                             # [5, 40000, 5]
    for k in (0, 4):                                                           # first and last of a block
        row = many[k]
        assert float(row.mean(0).abs().max()) < 0.03
        assert torch.allclose(row.T.cov(), torch.eye(5, dtype=T), atol=0.05)
        assert abs(float(row.norm(dim=-1).pow(2).mean()) - 5.0) < 0.1          # lengths of Gaussian vectors


def test_orthogonal_ars_with_all_directions_is_unbiased_and_lower_in_variance_on_a_linear_f() -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=20000)
    gen = torch.Generator().manual_seed(1)
    ortho = sg.ARS(4, orthogonal=True).estimate(prob.f, dist, gen, params=("loc",))
    assert z_test(ortho.grad["loc"], prob.exact_grad()["loc"]).max_abs_z < Z_THRESHOLD
    w = torch.linspace(-1, 2, 6, dtype=T)
    lin = sg.Normal(torch.zeros(20000, 6, dtype=T), torch.full((20000, 6), 0.2, dtype=T))
    mse = {}
    for orth in (False, True):
        g = sg.ARS(6, orthogonal=orth).estimate(lambda x: x @ w, lin, gen).grad["loc"]
        mse[orth] = float(((g - w) ** 2).sum(-1).mean())
    # N = D independent directions: E‖ĝ − w‖² = (D + 1)‖w‖²/N = 7‖w‖²/6; an orthogonal frame with Gaussian
    # lengths leaves only the spread of the lengths: 2‖w‖²/N = ‖w‖²/3.
    assert mse[True] < 0.6 * mse[False]


def test_orthogonal_must_be_a_bool() -> None:
    with pytest.raises(sg.InvalidArgumentError, match="orthogonal: need True or False; got 'yes'"):
        sg.ARS(4, orthogonal="yes")
