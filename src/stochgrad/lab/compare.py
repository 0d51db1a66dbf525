"""``stochgrad compare``: measure estimators side by side through the one run abstraction.

The run directory holds ``config.json``, ``metrics.jsonl`` (one record per function × dim × budget × estimator,
numbered by ``step``), ``records.csv`` (the same records as a table), ``plots/`` (arrows in 2-D, relative MSE and
cosine against evaluations) and ``summary.md`` (the table printed in the terminal). ``resume`` continues an
interrupted sweep.
"""

from __future__ import annotations

from pathlib import Path

from stochgrad.errors import BudgetError
from stochgrad.lab import plots
from stochgrad.lab.functions import get_function
from stochgrad.lab.sweep import SweepConfig, measure_item, parse_budget, write_csv
from stochgrad.runs import Command, run
from stochgrad.runs.files import atomic_write_text


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


class CompareExperiment:
    """A sweep as an :class:`~stochgrad.runs.Experiment`: one step measures one (function, dim, budget,
    estimator); the rows of ``metrics.jsonl`` are the records."""

    unit = "measurement"

    def __init__(self, config: SweepConfig, run_dir: Path | None = None, arrows: bool = True) -> None:
        self.config, self.arrows = config, arrows
        self.items = config.items()
        self.next = 0
        self.problems: dict = {}

    def stop_reason(self) -> str | None:
        return "done" if self.next >= len(self.items) else None

    def step(self) -> dict:
        record = measure_item(self.config, self.items[self.next], self.problems)
        self.next += 1
        return record

    def progress(self) -> tuple[int, int]:
        return self.next, len(self.items)

    def postfix(self, row: dict) -> dict:
        return {"last": f"{row['function']} D={row['dim']} {row['estimator']} @ {row['budget']}"}

    def state_dict(self) -> dict:
        return {"next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.next = int(state["next"])

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        """``records.csv``, the plots and ``summary.md``."""
        config, records = self.config, [{k: v for k, v in r.items() if k != "step"} for r in rows]
        write_csv(records, run_dir / "records.csv")
        plot_dir = run_dir / "plots"
        made = []
        for fn in config.functions:
            made.append(plots.rel_mse_vs_evals(records, fn, plot_dir / f"rel_mse_{fn}.png"))
            made.append(plots.cosine_vs_evals(records, fn, plot_dir / f"cosine_{fn}.png"))
            if self.arrows:
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


COMPARE = Command("compare", SweepConfig, CompareExperiment)


def run_compare(config: SweepConfig, out: str | Path, resume: bool = False, progress: bool = True,
                ) -> tuple[list[dict], Path]:
    """Measure every item of ``config`` into the run directory ``out`` (``resume`` continues an interrupted
    sweep: finished measurements are kept); returns the records and the run directory."""
    res = run(COMPARE, config, out, resume=resume, progress=progress)
    return [{k: v for k, v in r.items() if k != "step"} for r in res.rows], res.run_dir
