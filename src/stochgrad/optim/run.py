"""``stochgrad optimize``: minimise a lab test function, or your own ``module:callable``, through the one run
abstraction, with f evaluated in this process, in worker processes or on Ray.

The run directory (see :mod:`stochgrad.runs.run`) holds ``config.json``, ``metrics.jsonl`` (one row per step:
``step``, ``n_evals``, ``evals``, ``best_f``, ``mean_f``, ``sigma``, ``seconds``), ``checkpoint.pt`` (the
optimiser's complete state), ``plots/convergence.png`` and ``summary.md``. ``resume=True`` continues from the
checkpoint exactly as an uninterrupted run would; the budget, the time limit and the target may change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stochgrad.errors import InvalidArgumentError
from stochgrad.estimators.base import Evaluator
from stochgrad.estimators.registry import estimator_names, get_spec
from stochgrad.evaluators import Serial, make_evaluator
from stochgrad.lab.functions import FUNCTIONS
from stochgrad.optim.minimize import (
    OPTIMIZER_NAMES,
    SEARCH_DEFAULTS,
    MinimizeResult,
    check_first_step,
    make_search,
    resolve_optimizer,
    stop_reason,
    take_step,
)
from stochgrad.optim.objective import Objective, resolve_objective
from stochgrad.optim.quasi_newton import QuasiNewtonSearch
from stochgrad.optim.search import SearchGradient
from stochgrad.optim.shaping import SHAPINGS
from stochgrad.optim.staged import StagedSearch
from stochgrad.runs import Command, option, run
from stochgrad.runs.files import atomic_write_text, new_figure, save_figure


@dataclass
class OptimizeConfig:
    """Everything that defines an optimisation run (saved as config.json; the CLI's options)."""

    function: str = option("rastrigin", "a test function (" + ", ".join(FUNCTIONS) + ") or your own as "
                           "module:callable, batched [n, D] -> [n] (or one point [D] -> number with --per-point)")
    per_point: bool = option(False, "the module:callable takes one point [D] and returns a number")
    dim: int = option(10, "dimension D")
    estimator: str | None = option(None, "gradient estimator by name for search-gradient steps (then the optimizer "
                                         "defaults to natural); default: none, the staged search estimates its own",
                                   choices=tuple(estimator_names()))
    budget: int = option(20000, "evaluations of f in total (may be raised on --resume)", resumable=True)
    popsize: int | None = option(None, "evaluations per step of a search-gradient optimizer (default: 4 + 3 ln D, "
                                       "even, with natural steps; else 2*D and at least 8; at least what the "
                                       "estimator needs)")
    sigma0: float | None = option(None, "initial search scale (default: 0.1 x a test function's domain "
                                        "half-width; 1 for your own function)")
    x0: float | None = option(None, "initial value of every coordinate (default: a quarter of a test function's "
                                    "domain half-width; 0 for your own function)")
    lr: float | None = option(None, "learning rate (default: sigma0; 1 with --optimizer natural)")
    optimizer: str | None = option(None, "update rule: staged (default without --estimator: quasi-newton until it "
                                         "converges, then natural), quasi-newton (L-BFGS with a line search on "
                                         "orthogonal central differences of the ball-smoothed f), natural (default "
                                         "with --estimator: natural-gradient steps that also learn sigma, "
                                         "SNES-style), or a torch optimiser (adam, sgd); staged and quasi-newton "
                                         "take no --estimator, --popsize, --lr", choices=OPTIMIZER_NAMES)
    learn_scale: bool = option(False, "learn log(sigma) from the scale gradient (adam, sgd)")
    sigma_decay: float = option(0.995, "multiply sigma by this after every step when it is not learned "
                                       "(adam, sgd)")
    lr_decay: float = option(1.0, "multiply the learning rate by this after every step (1: fixed; "
                                    "search-gradient optimizers)")
    min_sigma: float = option(1e-8, "lower bound on sigma (search-gradient optimizers)")
    fitness_shaping: str = option(SEARCH_DEFAULTS["fitness_shaping"], "replace f by centred ranks within each step "
                                  "(search-gradient optimizers), or "
                                  "not", choices=tuple(SHAPINGS))
    target: float | None = option(None, "stop once a value <= target is seen", resumable=True)
    time_limit: float | None = option(None, "stop after this many seconds (of this session)", resumable=True)
    seed: int = option(0, "seed of every random number")
    checkpoint_every: int = option(50, "steps between checkpoints")
    evaluator: str = option("vectorized", "where f runs: one call in this process (a per-point f in a loop), "
                                          "worker processes, or a Ray cluster (both need an importable f)",
                            choices=("vectorized", "process", "ray"), resumable=True)
    workers: int | None = option(None, "worker processes / local Ray CPUs (default: all)", resumable=True)
    ray_address: str | None = option(None, "join a Ray cluster ('auto'); implies --evaluator ray", resumable=True)

    def validate(self) -> None:
        self.objective()
        need = 2 if self.function == "rosenbrock" else 1
        if self.dim < need:
            raise InvalidArgumentError(f"dim: {self.function} needs dim >= {need}; got {self.dim}")
        if self.budget < 1:
            raise InvalidArgumentError(f"budget: need a positive number of evaluations; got {self.budget}")
        if self.checkpoint_every < 1:
            raise InvalidArgumentError(f"checkpoint_every: need >= 1 step; got {self.checkpoint_every}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise InvalidArgumentError(f"time_limit: must be > 0 seconds; got {self.time_limit}")
        if self.update_rule() in ("quasi-newton", "staged"):
            given = [f"--{name}" for name, value in (("popsize", self.popsize is not None), ("lr", self.lr is not None))
                     if value]
            if given:
                raise InvalidArgumentError(f"optimizer: {self.update_rule()} estimates its own gradients; "
                                           f"{', '.join(given)} does not apply to it (it does to --optimizer natural, "
                                           "adam or sgd)")
        if self.estimator is not None:
            get_spec(self.estimator)

    def update_rule(self) -> str:
        """The optimizer this run uses (see :func:`~stochgrad.optim.minimize.resolve_optimizer`)."""
        return resolve_optimizer(self.optimizer, self.estimator)

    def objective(self) -> Objective:
        return resolve_objective(self.function, self.dim, self.per_point)

    def make_optimizer(self) -> SearchGradient | QuasiNewtonSearch | StagedSearch:
        obj = self.objective()
        domain = obj.domain
        sigma0 = self.sigma0 if self.sigma0 is not None else (0.1 * domain if domain else 1.0)
        x0 = torch.full((self.dim,), float(self.x0 if self.x0 is not None else (0.25 * domain if domain else 0.0)),
                        dtype=torch.float64)
        if self.update_rule() in ("quasi-newton", "staged"):
            return make_search(x0, sigma0, estimator=self.estimator, optimizer=self.update_rule(), seed=self.seed)
        return make_search(x0, sigma0, estimator=self.estimator, popsize=self.popsize, optimizer=self.update_rule(),
                           lr=self.lr, learn_scale=self.learn_scale, sigma_decay=self.sigma_decay,
                           lr_decay=self.lr_decay, min_sigma=self.min_sigma, fitness_shaping=self.fitness_shaping,
                           seed=self.seed)

    def make_evaluator(self) -> Evaluator | None:
        """None (one call of f) for a batched f in this process; else an evaluator that closes."""
        if self.evaluator == "vectorized" and self.ray_address is None:
            return Serial() if self.per_point else None
        return make_evaluator("ray" if self.ray_address else self.evaluator, self.workers, self.ray_address,
                              per_point=self.per_point)


class OptimizeExperiment:
    """One optimisation as an :class:`~stochgrad.runs.Experiment`: a step is one ask/evaluate/tell."""

    unit = "eval"

    def __init__(self, config: OptimizeConfig, run_dir: Path | None = None) -> None:
        self.config = config
        self.objective = config.objective()
        self.opt = config.make_optimizer()
        check_first_step(self.opt, config.budget)       # before anything is written
        self.evaluator = config.make_evaluator()
        self.start = time.perf_counter()
        self.deadline = None if config.time_limit is None else self.start + config.time_limit

    def stop_reason(self) -> str | None:
        return stop_reason(self.opt, self.config.budget, self.config.target, self.deadline)

    def step(self) -> dict[str, Any]:
        return take_step(self.opt, self.objective.f, self.evaluator, self.start)

    def progress(self) -> tuple[int, int]:
        return self.opt.n_evals, self.config.budget

    def postfix(self, row: dict) -> dict:
        return {"best": f"{row['best_f']:.4g}", "sigma": f"{row['sigma']:.2g}"}

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state)

    def result(self, rows: list[dict], stopped: str) -> MinimizeResult:
        opt = self.opt
        return MinimizeResult(opt.best_x.clone(), opt.best_f if math.isfinite(opt.best_f) else math.nan,
                              opt.n_evals, opt.n_steps, opt.loc.detach().clone(), stopped, rows)

    def close(self) -> None:
        if self.evaluator is not None and hasattr(self.evaluator, "close"):
            self.evaluator.close()
        self.evaluator = None

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        c, res = self.config, self.result(rows, stopped)
        how = c.update_rule() if c.estimator is None else f"{c.estimator}, {c.update_rule()}"
        title = f"{c.function} D={c.dim}, {how}, seed {c.seed}"
        convergence_plot(rows, run_dir / "plots" / "convergence.png", title)
        summary = [
            f"# stochgrad optimize: {title}", "",
            f"- stopped by: {stopped}",
            f"- evaluations: {res.n_evals} of {c.budget}",
            f"- steps: {res.n_steps}",
            f"- best f: {res.fun:.6g}" + ("" if self.objective.minimum is None
                                          else f" (global minimum {self.objective.minimum:.6g})"),
            f"- final σ (mean): {float(self.opt.scale.mean()):.3g}",
            "", "Plot: `plots/convergence.png`; metrics: `metrics.jsonl`; checkpoint: `checkpoint.pt`.", "",
        ]
        atomic_write_text(run_dir / "summary.md", "\n".join(summary))


OPTIMIZE = Command("optimize", OptimizeConfig, OptimizeExperiment)


def convergence_plot(history: list[dict], path: Path, title: str) -> Path:
    """Best value against evaluations (log scale when all values are positive)."""
    fig, ax = new_figure((5.5, 3.6))
    x = [h["n_evals"] for h in history]
    y = [h["best_f"] for h in history]
    ax.plot(x, y, color="tab:blue", label="best f so far")
    ax.plot(x, [h["mean_f"] for h in history], color="tab:blue", alpha=0.3, lw=0.8, label="mean f of the step")
    if y and min(y) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("evaluations of f")
    ax.set_ylabel("f")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def run_optimize(config: OptimizeConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 callback: Callable[[SearchGradient, dict], bool | None] | None = None,
                 ) -> tuple[MinimizeResult, Path]:
    """Run (or resume) an optimisation into run directory ``out``; ``callback(optimizer, row)`` may stop it."""
    cb = None if callback is None else (lambda exp, row: callback(exp.opt, row))
    res = run(OPTIMIZE, config, out, resume=resume, progress=progress, callback=cb)
    return res.experiment.result(res.rows, res.stopped), res.run_dir
