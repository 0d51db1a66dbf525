"""``stochgrad optimize``: minimise a lab test function with a run directory, checkpoints and resume.

The run directory holds ``config.json``, ``history.jsonl`` (one line per step), ``checkpoint.pt`` (the
optimiser's complete state, written atomically every ``checkpoint_every`` steps and at the end),
``plots/convergence.png`` and ``summary.md``. ``resume=True`` continues from the checkpoint: the history is
cut back to the checkpoint's step and the run goes on exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from stochgrad.errors import InvalidArgumentError  # noqa: E402
from stochgrad.estimators.registry import get_spec  # noqa: E402
from stochgrad.lab.functions import get_function  # noqa: E402
from stochgrad.optim.minimize import MinimizeResult, check_first_step, minimize  # noqa: E402
from stochgrad.optim.search import SearchGradient  # noqa: E402
from stochgrad.rundir import (  # noqa: E402
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    prepare_run_dir,
    read_jsonl,
    save_checkpoint,
    save_figure,
    truncate_jsonl,
)


@dataclass
class OptimizeConfig:
    """Everything that defines an optimisation run (saved as config.json)."""

    function: str = "rastrigin"
    dim: int = 10
    estimator: str = "auto"
    budget: int = 20000
    popsize: int | None = None
    sigma0: float | None = None          # default: 0.1 × the function's domain half-width
    x0: float | None = None              # default: every coordinate at a quarter of the domain half-width
    lr: float | None = None              # default: sigma0
    optimizer: str = "adam"
    learn_scale: bool = False
    sigma_decay: float = 0.995
    lr_decay: float = 1.0
    min_sigma: float = 1e-8
    fitness_shaping: str = "none"
    target: float | None = None
    time_limit: float | None = None
    seed: int = 0
    checkpoint_every: int = 50

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

    def make_optimizer(self) -> SearchGradient:
        fn = get_function(self.function)
        sigma0 = self.sigma0 if self.sigma0 is not None else 0.1 * fn.domain
        x0 = torch.full((self.dim,), self.x0 if self.x0 is not None else 0.25 * fn.domain, dtype=torch.float64)
        return SearchGradient(x0, sigma0, estimator=self.estimator, popsize=self.popsize, optimizer=self.optimizer,
                              lr=self.lr, learn_scale=self.learn_scale, sigma_decay=self.sigma_decay,
                              lr_decay=self.lr_decay,
                              min_sigma=self.min_sigma, fitness_shaping=self.fitness_shaping, seed=self.seed)


def convergence_plot(history: list[dict], path: Path, title: str) -> Path:
    """Best value against evaluations (log scale when all values are positive)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
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
                 callback: Callable | None = None) -> tuple[MinimizeResult, Path]:
    """Run (or resume) an optimisation into run directory ``out``."""
    run_dir = prepare_run_dir(out)
    cfg_path, hist_path, ckpt_path = run_dir / "config.json", run_dir / "history.jsonl", run_dir / "checkpoint.pt"
    if resume:
        if not cfg_path.exists():
            raise InvalidArgumentError(f"resume: {str(run_dir)!r} holds no run to resume (no config.json)")
        saved = json.loads(cfg_path.read_text())
        budget, time_limit = config.budget, config.time_limit
        config = OptimizeConfig(**saved)
        config.budget = max(budget, config.budget)   # a resumed run may be given a larger budget
        config.time_limit = time_limit
    else:
        config.validate()
        if ckpt_path.exists() or (hist_path.exists() and read_jsonl(hist_path)):
            raise InvalidArgumentError(f"out: {str(run_dir)!r} already holds a run; pass --resume to continue "
                                       "it or choose another --out")
    config.validate()
    opt = config.make_optimizer()
    if not resume:
        check_first_step(opt, config.budget)
    atomic_write_json(cfg_path, asdict(config))
    if resume and ckpt_path.exists():
        opt.load_state_dict(load_checkpoint(ckpt_path))
        truncate_jsonl(hist_path, opt.n_steps)
    elif resume:
        truncate_jsonl(hist_path, 0)
    history = read_jsonl(hist_path)

    def on_step(o: SearchGradient, row: dict) -> bool | None:
        append_jsonl(hist_path, row)
        history.append(row)
        if o.n_steps % config.checkpoint_every == 0:
            save_checkpoint(ckpt_path, o.state_dict())
        return callback(o, row) if callback is not None else None

    fn = get_function(config.function)
    result = minimize(fn, None, None, budget=config.budget, target=config.target, time_limit=config.time_limit,
                      progress=progress, callback=on_step, continue_from=opt)
    save_checkpoint(ckpt_path, opt.state_dict())
    result.history = history
    title = f"{config.function} D={config.dim}, {config.estimator}, seed {config.seed}"
    convergence_plot(history, run_dir / "plots" / "convergence.png", title)
    summary = [
        f"# stochgrad optimize: {title}", "",
        f"- stopped by: {result.stop}",
        f"- evaluations: {result.n_evals} of {config.budget}",
        f"- steps: {result.n_steps}",
        f"- best f: {result.fun:.6g} (global minimum {fn.minimum(config.dim):.6g})",
        f"- final σ (mean): {float(opt.scale.mean()):.3g}",
        "", "Plot: `plots/convergence.png`; history: `history.jsonl`; checkpoint: `checkpoint.pt`.", "",
    ]
    atomic_write_text(run_dir / "summary.md", "\n".join(summary))
    if not math.isfinite(result.fun):
        result.fun = math.nan
    return result, run_dir
