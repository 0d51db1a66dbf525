"""Auto against fixed estimators on functions where the score function wins and where MVD wins, from a cold
start (the mean squared error over estimates 1-20 counts), and the scale-equivariance of its decisions."""

from __future__ import annotations

import torch

import stochgrad as sg
from stochgrad.estimators.registry import make_estimator
from stochgrad.lab.discrete import DISCRETE
from stochgrad.lab.functions import FUNCTIONS
from stochgrad.lab.metrics import Problem

R, STEPS = 100, 20


def _cold_mse(est, f, dist, exact: torch.Tensor, param: str) -> float:
    gen = torch.Generator().manual_seed(11)
    total = 0.0
    for _ in range(STEPS):
        g = est.estimate(f, dist, generator=gen, params=(param,))
        err = g.grad[param].reshape(R, -1) - exact
        total += float((err * err).sum(-1).mean() / (exact * exact).sum())
    return total / STEPS


def _normal(name: str, dim: int, sigma: float):
    p = Problem.default(FUNCTIONS[name], dim, scale=sigma)
    return p.function, p.dist(R), p.exact(), "loc", p.dist()


def test_auto_follows_antithetic_pairs_where_the_score_function_wins() -> None:
    f, dist, exact, param, one = _normal("sum-cos", 10, 0.3)
    mse = {n: _cold_mse(make_estimator(n, 40, one, (param,)), f, dist, exact, param)
           for n in ("sf-antithetic", "mvd", "auto")}
    # measured: sf-antithetic 0.83, mvd 15.6, auto 0.92 (before antithetic pairs and the new pilot: 5.7x)
    assert mse["auto"] < 1.3 * mse["sf-antithetic"] and mse["auto"] < 0.2 * mse["mvd"], mse


def test_auto_moves_to_the_score_function_on_a_coupled_discrete_f() -> None:
    p = DISCRETE["poisson-exp"]
    dist, exact = p.dist(10, R), p.exact(10)
    mse = {n: _cold_mse(make_estimator(n, 40, p.dist(10), (p.param,)), p.f, dist, exact, p.param)
           for n in ("sf-loo", "mvd", "auto")}
    # measured: sf-loo 0.78, mvd 3.75, auto 1.0 (before: 2.0)
    assert mse["auto"] < 1.5 * mse["sf-loo"] and mse["auto"] < 0.5 * mse["mvd"], mse


def test_auto_keeps_its_gain_where_mvd_pays() -> None:
    f, dist, exact, param, one = _normal("ellipsoid", 10, 0.1)
    mse = {n: _cold_mse(make_estimator(n, 40, one, (param,)), f, dist, exact, param) for n in ("mvd", "auto")}
    assert mse["auto"] < 0.8 * mse["mvd"], mse


def test_auto_decisions_do_not_depend_on_the_scale_of_f() -> None:
    f, dist, _, param, _ = _normal("sum-quartic", 6, 0.3)
    runs = []
    for c in (1.0, 1000.0):
        est, gen = sg.Auto(24), torch.Generator().manual_seed(3)
        runs.append([est.estimate(lambda x, c=c: c * f(x), dist, generator=gen, params=(param,)).info["decision"]
                     for _ in range(8)])
    strip = [[{k: v for k, v in d.items() if k != "predicted_mse"} for d in run] for run in runs]
    assert strip[0] == strip[1]


def test_the_first_estimate_covers_every_component_where_enough_get_a_second_pair() -> None:
    """D = 40, B = 4D: one MVD pair on every component and a second on 8 (before: two each on 24, leaving 16 to
    the score function alone, 16x worse there where MVD wins); the first estimate is then within 2.5x of
    mvd-shared's (measured 1.76x; before, 17x)."""
    p = DISCRETE["bernoulli-square"]
    dist, exact = p.dist(40, R), p.exact(40)
    g = sg.Auto(160).estimate(p.f, dist, generator=torch.Generator().manual_seed(11), params=(p.param,))
    pairs = g.info["pairs"][p.param]
    assert bool((pairs >= 1).all()) and bool(((pairs == 2).sum(-1) == 8).all()) and int(pairs.sum(-1)[0]) == 48
    mse = {}
    for name, est in (("auto", sg.Auto(160)), ("mvd-shared", make_estimator("mvd-shared", 160, p.dist(40)))):
        g = est.estimate(p.f, dist, generator=torch.Generator().manual_seed(11), params=(p.param,))
        err = g.grad[p.param].reshape(R, -1) - exact
        mse[name] = float((err * err).sum(-1).mean() / (exact * exact).sum())
    assert mse["auto"] < 2.5 * mse["mvd-shared"], mse


def test_below_eight_second_pairs_the_first_estimate_gives_two_pairs_each() -> None:
    """D = 10, B = 4D: 15 pairs; with only 5 components measuring their own MVD variance, the one-pair
    components' reported variance would be too noisy (measured 1.3-1.65x at D = 8-10), so two each on 7 and
    one on another."""
    f, dist, _, param, _ = _normal("sphere", 10, 0.1)
    g = sg.Auto(40).estimate(f, dist, generator=torch.Generator().manual_seed(1), params=(param,))
    pairs = g.info["pairs"][param]
    assert bool(((pairs == 2).sum(-1) == 7).all()) and bool(((pairs == 1).sum(-1) == 1).all())
