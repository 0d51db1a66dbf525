"""Figures of the RL application: reward curves over seeds, and the variance-reduction bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stochgrad.runs.files import new_figure, save_figure


def curve_on_grid(rows: Sequence[dict], grid: np.ndarray, key: str = "eval_return") -> np.ndarray:
    """``key`` against training episodes, linearly interpolated onto ``grid`` (NaN outside the run)."""
    pts = [(r["episodes"], r[key]) for r in rows if r.get(key) is not None]
    if not pts:
        return np.full(grid.shape, np.nan)
    x, y = np.array(pts, dtype=float).T
    out = np.interp(grid, x, y)
    out[(grid < x[0]) | (grid > x[-1])] = np.nan
    return out


def y_limits(values: np.ndarray) -> tuple[float, float] | None:
    """The y range of a plot of ``values`` (any shape; NaN ignored): their span with 5% margins, or None."""
    values = np.asarray(values, dtype=float).reshape(-1)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) if high > low else max(1.0, abs(high) * 0.05)
    return low - pad, high + pad


def reward_curve(runs: dict[str, Sequence[Sequence[dict]]], path: Path, title: str,
                 threshold: float | None = None) -> Path:
    """Evaluation return of the mean policy against training episodes: per label the mean over seeds (line) and
    the spread between the lowest and highest seed (band). The y axis spans the data; a threshold outside it is
    named in the legend instead of stretching the axis.

    Args:
      runs: label → one list of metric rows per seed (a row at ``episodes`` 0 puts the starting policy on the
        curve).
      path: the PNG to write.
      threshold: drawn as a dashed line (ARS's reward threshold).
    """
    fig, ax = new_figure((6.0, 3.8))
    shown: list[np.ndarray] = []
    for i, (label, seeds) in enumerate(runs.items()):
        seeds = [s for s in seeds if s]
        if not seeds:
            continue
        end = max(max(r["episodes"] for r in s) for s in seeds)
        grid = np.linspace(0, end, 200)
        ys = np.stack([curve_on_grid(s, grid) for s in seeds])
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
        color = f"C{i}"
        ax.plot(grid, mean, color=color, label=f"{label} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
        ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
        shown += [lo, hi]
    limits = y_limits(np.concatenate(shown) if shown else np.array([]))
    if limits is not None:
        ax.set_ylim(*limits)
    if threshold is not None:
        if limits is None or limits[0] <= threshold <= limits[1]:
            ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"threshold {threshold:g}")
        else:
            where = "above" if threshold > limits[1] else "below"
            ax.plot([], [], color="k", ls="--", lw=0.8, label=f"threshold {threshold:g} ({where} the plot)")
    ax.set_xlabel("training episodes")
    ax.set_ylabel("return of the mean policy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def variance_bars(records: Sequence[dict], path: Path, title: str) -> Path:
    """Grouped bars: per (N, M, K) the relative variance reduction of CCMVD and CCSF against the score function
    at the same budget (with ± its standard error), one figure per environment.

    Args:
      records: rows with keys ``n, m, k, budget, estimator ("ccmvd" | "ccsf"), reduction, stderr``.
    """
    configs = sorted({(r["n"], r["m"], r["k"]) for r in records})
    names = [e for e in ("ccmvd", "ccsf") if any(r["estimator"] == e for r in records)]
    fig, ax = new_figure((max(4.5, 1.3 * len(configs) + 1.5), 3.6))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(configs))
    for j, name in enumerate(names):
        vals, errs = [], []
        for c in configs:
            r = next((r for r in records if (r["n"], r["m"], r["k"]) == c and r["estimator"] == name), None)
            vals.append(np.nan if r is None else r["reduction"])
            errs.append(0.0 if r is None else r["stderr"])
        ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, yerr=errs, capsize=3, label=name.upper(),
               color=f"C{j}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [f"N={n}\nM={m}, K={k}\nB={2 * (n + m * k)}" for n, m, k in configs], fontsize=7)
    ax.set_ylabel("relative variance reduction\non the chosen components")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
