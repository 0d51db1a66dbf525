"""Plots of gradient quality (matplotlib, written as PNG without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.ticker
import torch  # noqa: E402

from stochgrad.estimators.registry import make_estimator
from stochgrad.lab.functions import BenchmarkFunction
from stochgrad.lab.metrics import Problem, repeated_estimates
from stochgrad.runs.files import new_figure, save_figure

COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray"]


def _colour(names: Sequence[str], name: str) -> str:
    return COLOURS[list(names).index(name) % len(COLOURS)]


def arrows_2d(function: BenchmarkFunction, estimators: Sequence[str], budget: int, path: Path, n_arrows: int = 40,
              scale: float = 0.1, seed: int = 0) -> Path:
    """Single gradient estimates on the 2-D version of ``function`` as arrows in gradient space, one panel
    and colour per estimator, the exact gradient in black on every panel; shared axes so spreads compare."""
    problem = Problem.default(function, 2, scale)
    exact = problem.exact()
    clouds = {}
    for name in estimators:
        est = make_estimator(name, budget, problem.dist(), problem.params)
        g, n_evals, _ = repeated_estimates(est, problem, n_arrows, torch.Generator().manual_seed(seed))
        clouds[name] = (g, n_evals)
    reach = max(float(torch.quantile(g.norm(dim=-1), 0.9)) for g, _ in clouds.values())
    reach = 1.15 * max(reach, float(exact.norm()))
    fig, axes = new_figure((3.2 * len(estimators), 3.8), 1, len(estimators), squeeze=False)
    for ax, name in zip(axes[0], estimators):
        g, n_evals = clouds[name]
        col = _colour(estimators, name)
        zeros = torch.zeros(len(g))
        ax.quiver(zeros, zeros, g[:, 0], g[:, 1], angles="xy", scale_units="xy", scale=1, color=col, alpha=0.45,
                  width=0.008)
        ax.quiver([0], [0], [exact[0]], [exact[1]], angles="xy", scale_units="xy", scale=1, color="black",
                  width=0.016, label="exact")
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", lw=0.6, zorder=0)
        ax.axvline(0, color="0.85", lw=0.6, zorder=0)
        ax.set_title(f"{name}\n{n_evals} evaluations", fontsize=9)
        ax.set_xlabel("∂/∂μ₁", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("∂/∂μ₂", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower left")
    loc = ", ".join(f"{v:.2f}" for v in problem.loc.tolist())
    fig.suptitle(f"{n_arrows} single estimates of ∇_μ E f, {function.name} 2-D at μ = ({loc}), σ = {scale}",
                 fontsize=9)
    return save_figure(fig, path)


def _against_evals(records: list[dict], function: str, metric: str, ylabel: str, path: Path, log_y: bool,
                   band: str | None = None, note: str | None = None) -> Path:
    rows = [r for r in records if r["function"] == function]
    dims = sorted({r["dim"] for r in rows})
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    fig, axes = new_figure((4.0 * len(dims), 3.4), 1, len(dims), squeeze=False, sharey=log_y)
    for ax, dim in zip(axes[0], dims):
        for name in names:
            pts = sorted((r["n_evals"], r[metric], r.get(band) if band else None) for r in rows
                         if r["dim"] == dim and r["estimator"] == name)
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            col = _colour(names, name)
            ax.plot(x, y, "o-", color=col, label=name, ms=3.5)
            if band:
                ax.plot(x, [p[2] for p in pts], ":", color=col, lw=1)
        ax.set_xscale("log")
        ticks = sorted({r["n_evals"] for r in rows if r["dim"] == dim})
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(f"{function}, D = {dim}", fontsize=10)
        ax.set_xlabel("evaluations of f per estimate")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8)
    if note:
        fig.suptitle(note, fontsize=9)
    return save_figure(fig, path)


def rel_mse_vs_evals(records: list[dict], function: str, path: Path) -> Path:
    """Relative MSE ‖ĝ − g‖²/‖g‖² against evaluations, log-log, one panel per dimension."""
    return _against_evals(records, function, "rel_mse", "relative MSE  ‖ĝ − g‖² / ‖g‖²", path, log_y=True)


def cosine_vs_evals(records: list[dict], function: str, path: Path) -> Path:
    """Cosine similarity to the exact gradient (mean, solid; 10th percentile, dotted) against evaluations."""
    return _against_evals(records, function, "cos_mean", "cosine to exact gradient",
                          path, log_y=False, band="cos_p10", note="solid: mean; dotted: 10th percentile")
