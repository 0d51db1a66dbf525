"""Sweeps over functions, dimensions, budgets and estimators at equal evaluations, as tidy records.

Every measurement derives its own seed from the base seed and its key, so a record does not depend on which
other measurements ran or in what order; ``stochgrad compare`` (:mod:`stochgrad.lab.compare`) runs them as
the steps of a run.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.registry import get_spec, minimum_budget
from stochgrad.lab.functions import get_function
from stochgrad.lab.metrics import Problem, measure
from stochgrad.runs.config import option
from stochgrad.runs.files import atomic_write_text

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

    functions: list[str] = option(["rosenbrock"], "test function(s), comma-separated",
                                  flags=("--function", "--functions"))
    dims: list[int] = option([2, 10, 100], "dimension(s) D, comma-separated; one plot panel per dim",
                             flags=("--dim", "--dims"))
    estimators: list[str] = option(["sf-loo", "sf-antithetic", "mvd", "auto", "pathwise"],
                                   "estimators by name, comma-separated")
    budgets: list[str] = option(["2D", "4D", "8D", "16D"],
                                "evaluations of f per estimate, comma-separated: a number (80) or a multiple of the "
                                "dimension (4D = 4 x dim); every estimator gets the same budget")
    repeats: int = option(200, "independent estimates per measurement")
    scale: float = option(0.1, "σ of the Normal search distribution")
    params: tuple[str, ...] = option(("loc",), "parameters whose gradient is estimated: loc, scale or loc,scale")
    seed: int = option(0, "base seed; each measurement derives its own")

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


def run_sweep(config: SweepConfig, progress: bool = True) -> list[dict]:
    """Measure every item of ``config`` in this process, writing nothing (``stochgrad compare`` runs the same
    measurements through a run directory that resumes). Returns the records in the order of ``config.items()``."""
    config.validate()
    problems: dict[tuple[str, int], Problem] = {}
    out = []
    for item in tqdm(config.items(), desc="sweep", unit="measurement", disable=not progress, dynamic_ncols=True):
        out.append(measure_item(config, item, problems))
    return out


def measure_item(config: SweepConfig, item: tuple[str, int, int, str],
                 problems: dict[tuple[str, int], Problem]) -> dict:
    """The record of one (function, dim, budget, estimator) of ``config``; ``problems`` caches the problems."""
    fn, dim, budget, est = item
    if (fn, dim) not in problems:
        problems[(fn, dim)] = Problem.default(get_function(fn), dim, config.scale, config.params)
    return measure(est, problems[(fn, dim)], budget, config.repeats, seed=item_seed(config.seed, item_key(*item)))
