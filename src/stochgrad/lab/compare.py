"""``stochgrad compare``: measure estimators side by side and write a run directory.

The run directory holds ``config.json``, ``records.jsonl`` / ``records.csv`` (one record per function × dim ×
budget × estimator), ``plots/`` (arrows in 2-D, relative MSE and cosine against evaluations) and
``summary.md`` (the table printed in the terminal). Re-running with the same ``--out`` resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.lab import plots
from stochgrad.lab.functions import get_function
from stochgrad.lab.sweep import SweepConfig, config_dict, parse_budget, run_sweep
from stochgrad.rundir import atomic_write_json, atomic_write_text, prepare_run_dir, read_jsonl


def format_table(records: list[dict], metric: str = "rel_mse", markdown: bool = False) -> str:
    """One row per (function, dim, budget), one column per estimator, the best value marked with ``*``."""
    names = list(dict.fromkeys(r["estimator"] for r in records))
    rows: dict[tuple, dict[str, dict]] = {}
    for r in records:
        rows.setdefault((r["function"], r["dim"], r["budget"]), {})[r["estimator"]] = r
    head = ["function", "D", "evals"] + names
    lines = []
    for (fn, dim, budget), by in rows.items():
        vals = {n: by[n][metric] for n in names if n in by}
        best = min(vals, key=vals.get) if metric != "cos_mean" else max(vals, key=vals.get)
        cells = [fn, str(dim), str(budget)]
        for n in names:
            if n not in by:
                cells.append("-")
                continue
            v = f"{by[n][metric]:.3g}"
            if by[n]["n_evals"] != budget:
                v += f" ({by[n]['n_evals']})"
            cells.append(v + ("*" if n == best and len(vals) > 1 else ""))
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*c) for c in lines])


def run_compare(config: SweepConfig, out: str | Path | None, progress: bool = True,
                arrows: bool = True) -> tuple[list[dict], Path | None]:
    """Validate everything, prepare the run directory, sweep, plot and summarise.

    Returns the records and the run directory (None when ``out`` is None: nothing is written).
    """
    config.validate()
    run_dir = prepare_run_dir(out) if out is not None else None
    if run_dir is not None:
        cfg_path = run_dir / "config.json"
        if cfg_path.exists() and read_jsonl(run_dir / "records.jsonl"):
            old = json.loads(cfg_path.read_text())
            keep = {k: old.get(k) for k in ("repeats", "scale", "params", "seed")}
            now = {k: config_dict(config)[k] for k in keep}
            if keep != now:
                raise InvalidArgumentError(
                    f"out: {str(run_dir)!r} holds a run with different settings {keep}; resuming it with {now} "
                    "would mix incomparable records. Choose another --out")
        atomic_write_json(cfg_path, config_dict(config))
    records = run_sweep(config, run_dir, progress=progress)
    if run_dir is not None:
        plot_dir = run_dir / "plots"
        made = []
        for fn in config.functions:
            made.append(plots.rel_mse_vs_evals(records, fn, plot_dir / f"rel_mse_{fn}.png"))
            made.append(plots.cosine_vs_evals(records, fn, plot_dir / f"cosine_{fn}.png"))
            if arrows:
                budget = parse_budget(config.budgets[0], 2)
                try:
                    made.append(plots.arrows_2d(get_function(fn), config.estimators, budget,
                                                plot_dir / f"arrows_2d_{fn}.png", scale=config.scale))
                except BudgetError:
                    pass  # the first budget is below some estimator's minimum in 2-D: no arrows then
        summary = [
            "# stochgrad compare", "",
            f"Relative MSE ‖ĝ − g‖²/‖g‖² over {config.repeats} estimates per cell, at equal evaluations of f "
            f"(gradient of E f with respect to {', '.join(config.params)} under N(μ, {config.scale}²) at a "
            "fixed point); `*` marks the best in each row; a number in parentheses is the evaluations actually "
            "used when an estimator cannot use the whole budget.", "",
            format_table(records, markdown=True), "",
            "Cosine similarity to the exact gradient (mean):", "",
            format_table(records, metric="cos_mean", markdown=True), "",
            "Plots: " + ", ".join(f"`plots/{p.name}`" for p in made), "",
        ]
        atomic_write_text(run_dir / "summary.md", "\n".join(summary))
    return records, run_dir
