"""The staged search: quasi-Newton until it has converged once, then natural steps from the best point."""

from __future__ import annotations

from itertools import pairwise

import torch

from stochgrad.lab.functions import FUNCTIONS
from stochgrad.optim import StagedSearch, minimize
from stochgrad.optim.search import SearchGradient

T = torch.float64


def test_a_smooth_function_is_solved_in_the_first_stage() -> None:
    opt = StagedSearch(torch.zeros(6, dtype=T), 0.5, seed=0)
    res = minimize(FUNCTIONS["rosenbrock"], None, None, budget=5000, target=1e-10, continue_from=opt)
    assert res.stop == "target" and opt.stage == 1 and opt.switched_at is None


def test_a_rugged_function_switches_to_natural_steps_from_the_best_point() -> None:
    f = FUNCTIONS["ackley"]
    opt = StagedSearch(torch.full((10,), 8.192, dtype=T), 3.2768, seed=0)
    seen = []

    def watch(o, row):
        if o.stage == 2 and not seen:
            seen.append((o.first.best_x.clone(), o.second.loc.detach().clone()))

    res = minimize(f, None, None, budget=20_000, continue_from=opt, callback=watch)
    assert opt.stage == 2 and 0 < opt.switched_at < 2000
    assert isinstance(opt.second, SearchGradient) and opt.second.natural
    assert torch.equal(seen[0][0], seen[0][1])                       # the second stage starts at the best point
    assert res.fun < 1e-6 < opt.first.best_f                         # natural steps got out of the ripples
    assert res.n_evals == opt.first.n_evals + opt.done_evals + opt.second.n_evals


def test_a_converged_second_stage_restarts_with_twice_the_population_and_keeps_the_best() -> None:
    f = FUNCTIONS["ackley"]
    opt = StagedSearch(torch.full((10,), 8.192, dtype=T), 3.2768, seed=0)
    pops, bests = [], []

    def watch(o, row):
        if o.stage == 2:
            pops.append(o.second.popsize)
            bests.append(o.best_f)

    minimize(f, None, None, budget=40_000, continue_from=opt, callback=watch)
    assert opt.restarts >= 1
    assert sorted(set(pops)) == [10 * 2 ** k for k in range(opt.restarts + 1)]          # SNES's λ = 10 at D = 10
    assert all(b <= a for a, b in pairwise(bests))        # the best value never gets worse across restarts
    assert opt.best_f == min(opt.first.best_f, opt.done_best[0], opt.second.best_f)


def test_resume_across_the_switch_continues_exactly() -> None:
    f = FUNCTIONS["rastrigin"]

    def fresh():
        return StagedSearch(torch.full((4,), 1.28, dtype=T), 0.5, seed=2, patience=3)

    full = fresh()
    for _ in range(1500):
        full.tell(f(full.ask()))
    assert full.stage == 2 and full.restarts >= 1
    for cut_at in (5, 300, 1400):                # before and after the switch, after a restart
        cut = fresh()
        for _ in range(cut_at):
            cut.tell(f(cut.ask()))
        resumed = fresh()
        resumed.load_state_dict(cut.state_dict())
        for _ in range(1500 - cut_at):
            resumed.tell(f(resumed.ask()))
        assert resumed.stage == 2 and resumed.switched_at == full.switched_at and resumed.restarts == full.restarts
        assert torch.equal(resumed.loc, full.loc) and resumed.best_f == full.best_f
        assert resumed.n_evals == full.n_evals


def test_minimize_passes_dtype_to_the_staged_search() -> None:
    res = minimize(lambda x: (x ** 2).sum(-1), torch.ones(3), 1.0, budget=300, dtype=torch.float32)
    assert res.x.dtype == torch.float32 and res.loc.dtype == torch.float32
