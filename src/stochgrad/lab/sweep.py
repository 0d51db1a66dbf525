"""Sweeps over functions, dimensions, budgets and estimators at equal evaluations, as tidy records.

Each measurement is one JSON line in ``records.jsonl``, appended as soon as it is done, so an interrupted
sweep resumes where it stopped (finished keys are skipped); ``records.csv`` is rewritten from all records at
the end.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.registry import get_spec, minimum_budget
from stochgrad.lab.functions import get_function
from stochgrad.lab.metrics import Problem, measure
from stochgrad.rundir import append_jsonl, atomic_write_text, read_jsonl, truncate_jsonl

_BUDGET = re.compile(r"^\s*(\d+)\s*(D?)\s*$")


def parse_budget(spec: str | int, dim: int) -> int:
    """A budget in evaluations: ``"80"`` is 80, ``"4D"`` is 4 × dim."""
    if isinstance(spec, int):
        return spec
    m = _BUDGET.match(str(spec))
    if not m or int(m.group(1)) < 1:
        raise InvalidArgumentError(
            f"budgets: {spec!r} is not a positive number of evaluations (like 80) or a multiple of the "
            "dimension (like 4D)")
    return int(m.group(1)) * (dim if m.group(2) else 1)


@dataclass
class SweepConfig:
    """What to measure; every combination of functions × dims × budgets × estimators is one record."""

    functions: list[str] = field(default_factory=lambda: ["rosenbrock"])
    dims: list[int] = field(default_factory=lambda: [2, 10, 100])
    estimators: list[str] = field(default_factory=lambda: ["sf-loo", "sf-antithetic", "mvd", "auto", "pathwise"])
    budgets: list[str] = field(default_factory=lambda: ["2D", "4D", "8D", "16D"])
    repeats: int = 200
    scale: float = 0.1
    params: tuple[str, ...] = ("loc",)
    seed: int = 0

    def validate(self) -> None:
        """Fail before any work: unknown names, bad numbers, budgets below an estimator's minimum."""
        for name in self.functions:
            get_function(name)
        for name in self.estimators:
            get_spec(name)
        if not self.functions or not self.estimators or not self.dims or not self.budgets:
            raise InvalidArgumentError("need at least one function, estimator, dim and budget")
        if self.repeats < 2:
            raise InvalidArgumentError(f"repeats: need at least 2 to measure a variance; got {self.repeats}")
        for p in self.params:
            if p not in ("loc", "scale"):
                raise InvalidArgumentError(f"params: the lab estimates 'loc' and/or 'scale'; got {p!r}")
        for fn in self.functions:
            for dim in self.dims:
                problem = Problem.default(get_function(fn), dim, self.scale, self.params)
                for b in self.budgets:
                    budget = parse_budget(b, dim)
                    for est in self.estimators:
                        need = minimum_budget(est, problem.dist(), self.params)
                        if budget < need:
                            raise BudgetError(
                                f"budgets: {est} needs at least {need} evaluations per estimate at dim {dim} "
                                f"(params {','.join(self.params)}); budget {b!r} gives {budget}. Use a larger "
                                f"budget or one relative to the dimension, like {-(-need // dim)}D")

    def items(self) -> list[tuple[str, int, int, str]]:
        """(function, dim, budget, estimator) for every measurement, in a stable order."""
        return [(fn, d, parse_budget(b, d), est) for fn in self.functions for d in self.dims
                for b in self.budgets for est in self.estimators]


def item_key(fn: str, dim: int, budget: int, est: str) -> str:
    return f"{fn}|{dim}|{budget}|{est}"


def item_seed(seed: int, key: str) -> int:
    """A seed per measurement that depends only on the base seed and the measurement's key."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 63)


def write_csv(records: Iterable[dict], path: Path) -> None:
    """Flat CSV of the records (the per-component variance list is left to the JSON lines)."""
    rows = [{k: v for k, v in r.items() if k != "variance"} for r in records]
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def run_sweep(config: SweepConfig, out_dir: Path | None = None, progress: bool = True) -> list[dict]:
    """Measure every item of ``config``; with ``out_dir``, append records to ``records.jsonl`` and resume.

    Returns all records (loaded and new) in the order of ``config.items()``.
    """
    config.validate()
    jsonl = out_dir / "records.jsonl" if out_dir is not None else None
    previous = read_jsonl(jsonl) if jsonl else []
    if previous:
        truncate_jsonl(jsonl, len(previous))   # drop a line torn by an interruption before appending
    done = {item_key(r["function"], r["dim"], r["budget"], r["estimator"]): r for r in previous}
    items = config.items()
    problems: dict[tuple[str, int], Problem] = {}
    bar = tqdm(items, desc="compare", unit="measurement", disable=not progress, dynamic_ncols=True)
    for fn, dim, budget, est in bar:
        key = item_key(fn, dim, budget, est)
        if key in done:
            continue
        bar.set_postfix_str(f"{fn} D={dim} {est} @ {budget}", refresh=False)
        if (fn, dim) not in problems:
            problems[(fn, dim)] = Problem.default(get_function(fn), dim, config.scale, config.params)
        record = measure(est, problems[(fn, dim)], budget, config.repeats, seed=item_seed(config.seed, key))
        done[key] = record
        if jsonl is not None:
            append_jsonl(jsonl, record)
    records = [done[item_key(*it)] for it in items]
    if out_dir is not None:
        write_csv(records, out_dir / "records.csv")
    return records


def config_dict(config: SweepConfig) -> dict:
    d = asdict(config)
    d["params"] = list(config.params)
    return d
