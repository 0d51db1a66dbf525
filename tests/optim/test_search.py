"""The search-gradient optimiser: reaching targets, ask/tell misuse, determinism, resume, shaping."""

from __future__ import annotations

import math

import pytest
import torch

import stochgrad as sg
from stochgrad.lab.functions import FUNCTIONS
from stochgrad.optim import AskTellError, SearchGradient, centered_ranks, minimize

T = torch.float64


@pytest.mark.parametrize("estimator", ["mvd", "auto", "sf-antithetic"])
def test_reaches_the_target_on_a_10d_sphere(estimator: str) -> None:
    shaping = "centered-ranks" if estimator.startswith("sf") else "none"
    res = minimize(FUNCTIONS["sphere"], torch.full((10,), 1.28, dtype=T), 0.5, budget=30_000, estimator=estimator,
                   target=1e-6, optimizer="adam", lr=0.1, sigma_decay=0.99, lr_decay=0.99, fitness_shaping=shaping,
                   seed=0)
    assert res.stop == "target", (res.fun, res.n_evals)
    assert res.fun <= 1e-6 and res.n_evals <= 30_000
    assert float(FUNCTIONS["sphere"](res.x)) == pytest.approx(res.fun)


@pytest.mark.parametrize("estimator", ["mvd", "auto"])
def test_reaches_the_target_on_a_10d_rosenbrock(estimator: str) -> None:
    res = minimize(FUNCTIONS["rosenbrock"], torch.full((10,), 0.5, dtype=T), 0.2, budget=60_000,
                   estimator=estimator, target=1.0, optimizer="adam", fitness_shaping="none", lr=0.05,
                   sigma_decay=0.995, seed=0)
    assert res.stop == "target", (res.fun, res.n_evals)


def test_history_and_stops() -> None:
    f = FUNCTIONS["sphere"]
    adam = {"optimizer": "adam", "fitness_shaping": "none"}
    res = minimize(f, torch.ones(4, dtype=T), 0.3, budget=101, estimator="mvd", seed=0, **adam)
    assert res.stop == "budget" and res.n_evals == 96 and res.n_steps == 12    # popsize 8: no partial step
    assert [h["n_evals"] for h in res.history] == list(range(8, 97, 8))
    assert all(a["best_f"] >= b["best_f"] for a, b in zip(res.history, res.history[1:]))
    stopped = minimize(f, torch.ones(4, dtype=T), 0.3, budget=10_000, estimator="mvd", callback=lambda o, r: True,
                       **adam)
    assert stopped.stop == "callback" and stopped.n_steps == 1
    timed = minimize(f, torch.ones(4, dtype=T), 0.3, budget=10**9, estimator="mvd", time_limit=0.2, **adam)
    assert timed.stop == "time"


def _state_equal(a: dict, b: dict) -> bool:
    for k in a:
        if isinstance(a[k], torch.Tensor):
            if not torch.equal(a[k], b[k]):
                return False
        elif isinstance(a[k], dict):
            if not _state_equal(a[k], b[k]):
                return False
        elif a[k] != b[k]:
            return False
    return True


@pytest.mark.parametrize("estimator", ["auto", "mvd"])
def test_ask_tell_misuse_gives_clear_errors_and_leaves_the_state_unchanged(estimator: str) -> None:
    opt = SearchGradient(torch.zeros(5, dtype=T), 0.5, estimator=estimator, seed=3)
    with pytest.raises(AskTellError, match="tell: there are no pending points; call ask"):
        opt.tell(torch.zeros(10))
    x = opt.ask()
    opt.tell(FUNCTIONS["sphere"](x))
    before = opt.state_dict()
    x = opt.ask()
    with pytest.raises(AskTellError, match="ask: the previous points were not told yet"):
        opt.ask()
    with pytest.raises(sg.EvaluationError, match=rf"f returned values of shape \[{len(x) - 1}\] .* shape \[{len(x)}\]"):
        opt.tell(FUNCTIONS["sphere"](x)[:-1])
    bad = FUNCTIONS["sphere"](x).clone()
    bad[3] = math.nan
    with pytest.raises(sg.EvaluationError, match=r"non-finite .* point index\(es\) \[3\]"):
        opt.tell(bad)
    opt2 = SearchGradient(torch.zeros(5, dtype=T), 0.5, estimator=estimator, seed=3)
    opt2.load_state_dict(before)
    opt2.ask()
    assert torch.equal(opt2._pending.points, opt._pending.points)         # the failed tells consumed nothing
    opt.tell(FUNCTIONS["sphere"](x))
    opt2.tell(FUNCTIONS["sphere"](x))
    assert torch.equal(opt.loc, opt2.loc) and opt.n_evals == opt2.n_evals


@pytest.mark.parametrize("estimator", ["auto", "ccmvd", "sf-antithetic"])
def test_resumed_run_reaches_the_same_result_as_an_uninterrupted_one(tmp_path, estimator: str) -> None:
    f = FUNCTIONS["rastrigin"]
    kw = dict(estimator=estimator, learn_scale=True, seed=7)
    full = SearchGradient(torch.full((6,), 1.0, dtype=T), 0.3, **kw)
    for _ in range(30):
        full.tell(f(full.ask()))
    first = SearchGradient(torch.full((6,), 1.0, dtype=T), 0.3, **kw)
    for _ in range(12):
        first.tell(f(first.ask()))
    torch.save(first.state_dict(), tmp_path / "ckpt.pt")
    del first
    second = SearchGradient(torch.full((6,), 1.0, dtype=T), 0.3, **kw)
    second.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    for _ in range(18):
        second.tell(f(second.ask()))
    assert torch.equal(full.loc, second.loc) and torch.equal(full.scale, second.scale)
    assert full.best_f == second.best_f and full.n_evals == second.n_evals


def test_learned_scale_shrinks_near_the_optimum() -> None:
    opt = SearchGradient(torch.zeros(5, dtype=T), 1.0, estimator="mvd", learn_scale=True, seed=0)
    for _ in range(200):
        opt.tell(FUNCTIONS["sphere"](opt.ask()))
    assert float(opt.scale.mean()) < 0.2


def test_maximize_climbs() -> None:
    f = lambda x: -((x - 2.0) ** 2).sum(-1)
    res_opt = SearchGradient(torch.zeros(3, dtype=T), 0.3, estimator="mvd", maximize=True, lr=0.1, seed=0)
    for _ in range(200):
        res_opt.tell(f(res_opt.ask()))
    assert torch.allclose(res_opt.loc.detach(), torch.full((3,), 2.0, dtype=T), atol=0.05)
    assert res_opt.best_f > -0.05


def test_centered_ranks() -> None:
    assert centered_ranks(torch.tensor([3.0, -1.0, 10.0])).tolist() == [0.0, -0.5, 0.5]
    assert centered_ranks(torch.tensor([1.0, 1.0, 5.0, 0.0])).tolist() == pytest.approx(
        [(1.5 / 3) - 0.5, (1.5 / 3) - 0.5, 0.5, -0.5])
    v = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    r = centered_ranks(v)
    assert torch.equal(r.argsort(0), v.argsort(0))


def test_fitness_shaping_is_invariant_to_monotone_transforms() -> None:
    f = FUNCTIONS["rosenbrock"]
    runs = []
    for g in (f, lambda x: torch.log1p(f(x)) * 7 + 3):
        opt = SearchGradient(torch.full((4,), 0.5, dtype=T), 0.2, estimator="mvd", fitness_shaping="centered-ranks",
                             seed=1)
        for _ in range(20):
            opt.tell(g(opt.ask()))
        runs.append(opt.loc.detach().clone())
    assert torch.allclose(runs[0], runs[1])


def test_a_process_pool_gives_the_same_run_as_vectorized_evaluation() -> None:
    f = FUNCTIONS["ackley"]
    a = minimize(f, torch.ones(6, dtype=T), 0.5, budget=240, estimator="auto", seed=2)
    with sg.evaluators.ProcessPool(2, per_point=False) as pool:
        b = minimize(f, torch.ones(6, dtype=T), 0.5, budget=240, estimator="auto", seed=2, evaluator=pool)
    assert torch.allclose(a.loc, b.loc) and a.fun == pytest.approx(b.fun)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x0=torch.zeros(2, 2), sigma0=1.0), sg.InvalidArgumentError, r"x0: need a non-empty vector"),
    (dict(x0=torch.zeros(3), sigma0=0.0), sg.InvalidArgumentError, r"sigma0: must be positive"),
    (dict(x0=torch.zeros(3), sigma0=1.0, fitness_shaping="ranks"), sg.InvalidArgumentError,
     r"fitness_shaping: got 'ranks'; choose one of \['none', 'centered-ranks'\]"),
    (dict(x0=torch.zeros(3), sigma0=1.0, optimizer="lbfgs"), sg.InvalidArgumentError, r"optimizer: got 'lbfgs'"),
    (dict(x0=torch.zeros(3), sigma0=1.0, estimator="mvd", popsize=4), sg.BudgetError,
     r"budget: mvd needs at least 6 evaluations"),
    (dict(x0=torch.zeros(3), sigma0=1.0, estimator="cma"), sg.InvalidArgumentError, r"unknown name 'cma'"),
])
def test_bad_optimizer_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        SearchGradient(**kwargs)


@pytest.mark.parametrize("rule", ["adam", "sgd", "natural"])
def test_minimize_takes_the_update_rule_it_documents(rule: str) -> None:
    res = minimize(FUNCTIONS["sphere"], torch.ones(4, dtype=T), 0.3, budget=400, estimator="sf-antithetic",
                   optimizer=rule, fitness_shaping="centered-ranks", seed=0)
    assert res.n_evals == 400 and res.fun < FUNCTIONS["sphere"](torch.ones(1, 4, dtype=T)).item()


def test_minimize_continues_a_search_gradient() -> None:
    f = FUNCTIONS["sphere"]
    straight = minimize(f, torch.ones(4, dtype=T), 0.3, budget=160, estimator="mvd", seed=0)
    opt = SearchGradient(torch.ones(4, dtype=T), 0.3, estimator="mvd", seed=0, **minimize_defaults())
    minimize(f, None, None, budget=80, continue_from=opt)
    cont = minimize(f, None, None, budget=160, continue_from=opt)
    assert cont.n_evals == 160 and torch.equal(cont.loc, straight.loc)


def test_a_budget_below_one_step_is_refused_before_any_work() -> None:
    calls = []

    def f(x):
        calls.append(x)
        return (x ** 2).sum(-1)

    with pytest.raises(sg.BudgetError, match=r"budget: one step of mvd with popsize 16 needs 16 evaluations of "
                                             r"f; got a budget of 5"):
        minimize(f, torch.ones(4, dtype=T), 0.3, budget=5, estimator="mvd")
    assert calls == []


def minimize_defaults() -> dict:
    from stochgrad.optim.minimize import SEARCH_DEFAULTS

    return {k: v for k, v in SEARCH_DEFAULTS.items() if k != "estimator"}


def test_the_defaults_adapt_sigma_and_reach_1e_8() -> None:
    """With no options, minimize runs the staged search; with only an estimator, natural steps on centred ranks
    with SNES's population; the earlier default (Adam at a fixed sigma) could not get below the noise of its
    sigma."""
    from stochgrad.optim.minimize import DEFAULTS, SEARCH_DEFAULTS
    from stochgrad.optim.search import snes_popsize

    assert DEFAULTS == {"optimizer": "staged"}
    assert SEARCH_DEFAULTS == {"estimator": "sf-antithetic", "optimizer": "natural",
                               "fitness_shaping": "centered-ranks"}
    assert [snes_popsize(d) for d in (2, 10, 40, 160)] == [6, 10, 16, 20]
    scales = 10.0 ** torch.linspace(0, 3, 10, dtype=T)

    def ellipsoid(x):                          # axis-aligned, condition number 1e6 (SNES adapts per coordinate)
        return ((x * scales) ** 2).sum(-1)

    for f in (FUNCTIONS["sphere"], ellipsoid):
        res = minimize(f, torch.full((10,), 1.0, dtype=T), 0.5, budget=40_000, target=1e-8, seed=0,
                       estimator="sf-antithetic")
        assert res.stop == "target", (res.fun, res.n_evals)
        assert res.history[0]["evals"] == 10
        staged = minimize(f, torch.full((10,), 1.0, dtype=T), 0.5, budget=40_000, target=1e-8, seed=0)
        assert staged.stop == "target" and staged.n_evals < res.n_evals / 5, (staged.n_evals, res.n_evals)
    old = minimize(FUNCTIONS["sphere"], torch.full((10,), 1.0, dtype=T), 0.5, budget=40_000, target=1e-8, seed=0,
                   estimator="auto", optimizer="adam", fitness_shaping="none")
    assert old.stop == "budget"


def test_a_diverging_natural_step_is_a_named_error_and_changes_nothing() -> None:
    from stochgrad.optim import DivergenceError

    def steep(x):                              # a wider search lowers E f without bound: log sigma explodes
        return -1e10 * (x ** 2).sum(-1)

    opt = SearchGradient(torch.ones(4, dtype=T), 0.5, estimator="sf-antithetic", optimizer="natural",
                         fitness_shaping="none", seed=0)
    before = opt.state_dict()
    x = opt.ask()
    with pytest.raises(DivergenceError, match=r"loc or scale infinite .*use fitness_shaping='centered-ranks'"):
        opt.tell(steep(x))
    assert torch.equal(opt.loc.detach(), before["loc"]) and torch.equal(opt.scale, before["log_scale"].exp())
    assert opt.n_steps == 0 and opt.n_evals == 0
    opt.fitness_shaping = "centered-ranks"
    opt.tell(steep(x))                         # the same points are still pending; with ranks the step is bounded
    assert opt.n_steps == 1
