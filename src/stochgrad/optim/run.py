"""``stochgrad optimize``: minimise a lab test function through the one run abstraction.

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
from stochgrad.estimators.registry import estimator_names, get_spec
from stochgrad.lab.functions import FUNCTIONS, get_function
from stochgrad.optim.minimize import MinimizeResult, check_first_step, stop_reason, take_step
from stochgrad.optim.search import OPTIMIZERS, SearchGradient
from stochgrad.optim.shaping import SHAPINGS
from stochgrad.runs import Command, option, run
from stochgrad.runs.files import atomic_write_text, new_figure, save_figure


@dataclass
class OptimizeConfig:
    """Everything that defines an optimisation run (saved as config.json; the CLI's options)."""

    function: str = option("rastrigin", "test function", choices=tuple(FUNCTIONS))
    dim: int = option(10, "dimension D")
    estimator: str = option("auto", "gradient estimator by name", choices=tuple(estimator_names()))
    budget: int = option(20000, "evaluations of f in total (may be raised on --resume)", resumable=True)
    popsize: int | None = option(None, "evaluations per step (default: 2*D, at least 8)")
    sigma0: float | None = option(None, "initial search scale (default: 0.1 x the function's domain half-width)")
    x0: float | None = option(None, "initial value of every coordinate (default: a quarter of the domain "
                                    "half-width)")
    lr: float | None = option(None, "learning rate (default: sigma0; 1 with --optimizer natural)")
    optimizer: str = option("adam", "update rule: a torch optimiser (adam, sgd) or natural-gradient steps that "
                                    "also learn sigma, SNES-style", choices=(*OPTIMIZERS, "natural"))
    learn_scale: bool = option(False, "learn log(sigma) from the scale gradient")
    sigma_decay: float = option(0.995, "multiply sigma by this after every step when it is not learned")
    lr_decay: float = option(1.0, "multiply the learning rate by this after every step (1: fixed)")
    min_sigma: float = option(1e-8, "lower bound on sigma")
    fitness_shaping: str = option("none", "replace f by centred ranks within each step", choices=tuple(SHAPINGS))
    target: float | None = option(None, "stop once a value <= target is seen", resumable=True)
    time_limit: float | None = option(None, "stop after this many seconds (of this session)", resumable=True)
    seed: int = option(0, "seed of every random number")
    checkpoint_every: int = option(50, "steps between checkpoints")

    def validate(self) -> None:
        fn = get_function(self.function)
        get_spec(self.estimator)
        if self.dim < (2 if fn.name == "rosenbrock" else 1):
            raise InvalidArgumentError(f"dim: {fn.name} needs dim >= {2 if fn.name == 'rosenbrock' else 1}; "
                                       f"got {self.dim}")
        if self.budget < 1:
            raise InvalidArgumentError(f"budget: need a positive number of evaluations; got {self.budget}")
        if self.checkpoint_every < 1:
            raise InvalidArgumentError(f"checkpoint_every: need >= 1 step; got {self.checkpoint_every}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise InvalidArgumentError(f"time_limit: must be > 0 seconds; got {self.time_limit}")

    def make_optimizer(self) -> SearchGradient:
        fn = get_function(self.function)
        sigma0 = self.sigma0 if self.sigma0 is not None else 0.1 * fn.domain
        x0 = torch.full((self.dim,), self.x0 if self.x0 is not None else 0.25 * fn.domain, dtype=torch.float64)
        return SearchGradient(x0, sigma0, estimator=self.estimator, popsize=self.popsize, optimizer=self.optimizer,
                              lr=self.lr, learn_scale=self.learn_scale, sigma_decay=self.sigma_decay,
                              lr_decay=self.lr_decay,
                              min_sigma=self.min_sigma, fitness_shaping=self.fitness_shaping, seed=self.seed)


class OptimizeExperiment:
    """One optimisation as an :class:`~stochgrad.runs.Experiment`: a step is one ask/evaluate/tell."""

    unit = "eval"

    def __init__(self, config: OptimizeConfig, run_dir: Path | None = None) -> None:
        self.config = config
        self.fn = get_function(config.function)
        self.opt = config.make_optimizer()
        check_first_step(self.opt, config.budget)       # before anything is written
        self.start = time.perf_counter()
        self.deadline = None if config.time_limit is None else self.start + config.time_limit

    def stop_reason(self) -> str | None:
        return stop_reason(self.opt, self.config.budget, self.config.target, self.deadline)

    def step(self) -> dict[str, Any]:
        return take_step(self.opt, self.fn, None, self.start)

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

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        c, res = self.config, self.result(rows, stopped)
        title = f"{c.function} D={c.dim}, {c.estimator}, seed {c.seed}"
        convergence_plot(rows, run_dir / "plots" / "convergence.png", title)
        summary = [
            f"# stochgrad optimize: {title}", "",
            f"- stopped by: {stopped}",
            f"- evaluations: {res.n_evals} of {c.budget}",
            f"- steps: {res.n_steps}",
            f"- best f: {res.fun:.6g} (global minimum {self.fn.minimum(c.dim):.6g})",
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
