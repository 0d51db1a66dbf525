"""The suite on which Auto is compared with the best fixed estimator, from a cold start.

A cell is (problem, D, σ, budget B). Every estimator starts fresh on R independent copies (leading parameter
dimensions) and makes ``STEPS`` estimates at the same point; the cell's number is the relative MSE
‖ĝ − g‖²/‖g‖² averaged over the copies and over estimates 1..STEPS (so the cold start counts). Fixed
estimators are compared at the same B: sf-loo and sf-antithetic (Normal only) always, mvd and mvd-shared where
B ≥ 2·D (one pair per component).

Problems: the Normal lab functions (MVD-favoured: sphere, ellipsoid, rosenbrock at σ = 0.1; non-separable:
sum-quartic, sum-exp, product at σ = 0.1, 0.3, 0.6) and the discrete lab problems. ``HELD_OUT`` cells (sum-cos,
sum-logistic, bernoulli-product, poisson-square) were not looked at while Auto was designed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from stochgrad.errors import BudgetError
from stochgrad.estimators.registry import make_estimator
from stochgrad.lab.discrete import DISCRETE
from stochgrad.lab.discrete import HELD_OUT as DISCRETE_HELD_OUT
from stochgrad.lab.functions import FUNCTIONS
from stochgrad.lab.metrics import Problem

STEPS = 20
FIXED = ("sf-loo", "sf-antithetic", "mvd", "mvd-shared")
HELD_OUT = ("sum-cos", "sum-logistic", *DISCRETE_HELD_OUT)


@dataclass
class Cell:
    problem: str
    dim: int
    sigma: float | None
    budget: int
    make: Callable[[int], object]            # copies -> family
    exact: torch.Tensor                       # [K]
    f: Callable
    param: str

    @property
    def held_out(self) -> bool:
        return self.problem in HELD_OUT


def cells(dims=(10, 40), budgets=(1, 4, 16)) -> Iterator[Cell]:
    """Every cell of the suite; ``budgets`` are multiples of D."""
    normal = [(fn, 0.1) for fn in ("sphere", "ellipsoid", "rosenbrock")]
    normal += [(fn, s) for fn in ("sum-quartic", "sum-exp", "product", "sum-cos", "sum-logistic")
               for s in (0.1, 0.3, 0.6)]
    for d in dims:
        for fn, sigma in normal:
            problem = Problem.default(FUNCTIONS[fn], d, scale=sigma)
            for k in budgets:
                yield Cell(fn, d, sigma, k * d, problem.dist, problem.exact(), problem.function, "loc")
        for name, p in DISCRETE.items():
            for k in budgets:
                yield Cell(name, d, None, k * d, lambda r, p=p, d=d: p.dist(d, r), p.exact(d), p.f, p.param)


def cold_start_mse(name: str, cell: Cell, repeats: int, seed: int = 0) -> float | None:
    """Relative MSE of estimator ``name`` averaged over estimates 1..STEPS and ``repeats`` copies (None: the
    estimator does not apply to the cell)."""
    dist = cell.make(repeats)
    try:
        est = make_estimator(name, cell.budget, cell.make(None), (cell.param,))
        est.plan(dist, torch.Generator().manual_seed(0), (cell.param,))
    except (BudgetError, ValueError):
        return None
    if hasattr(est, "reset"):
        est.reset()
    gen = torch.Generator().manual_seed(seed)
    g2 = float((cell.exact * cell.exact).sum())
    total = 0.0
    for _ in range(STEPS):
        g = est.estimate(cell.f, dist, generator=gen, params=(cell.param,))
        err = g.grad[cell.param].reshape(repeats, -1) - cell.exact
        total += float((err * err).sum(-1).mean()) / g2
    return total / STEPS
