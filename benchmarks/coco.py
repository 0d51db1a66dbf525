"""COCO as the referee: stochgrad's `minimize` defaults side by side with CMA-ES, sep-CMA-ES, IPOP-CMA-ES and
L-BFGS-B on finite differences, on COCO's bbob, bbob-largescale and bbob-noisy suites (`pip install
coco-experiment cma scipy`; runs offline).

    python benchmarks/coco.py run --suite bbob --dims 2,5,10            # 5 instances at D <= 10, 3 above
    python benchmarks/coco.py run --suite bbob --dims 20,40
    python benchmarks/coco.py run --suite bbob-largescale --dims 80,160
    python benchmarks/coco.py run --suite bbob-noisy --dims 2,5
    python benchmarks/coco.py report                                    # tables + ECDF plots into docs/
    python -m cocopp benchmarks/results/coco/bbob/*                     # COCO's own post-processing

Every run is one (suite, method, function, dimension, instance): a fresh COCO problem, observed by a
`cocoex.Observer` that writes COCO's data format under ``benchmarks/results/coco/<suite>/<method>/`` (out of git;
`cocopp` reads it), started at COCO's ``initial_solution`` with σ0 = 2 (a fifth of the [-5, 5] box). A run stops at
COCO's final target (Δf = f − f_opt < 1e-8, ``problem.final_target_hit``), at its budget of evaluations (default
1e4·D at D <= 10, 2e3·D at D <= 40, 1e3·D above), or at its wall-time cap. What each run measured (evaluations,
solved, the first evaluation at which each of the 51 targets 10^{2, 1.8, ..., -8} was reached, wall time, time in
f) is appended as one JSON line to ``benchmarks/results/coco_runs.jsonl``; ``run`` skips runs already there, so it
resumes, and ``report`` rebuilds every table and plot from that file alone.

A new method is one line in :data:`METHODS`: a callable ``(problem, budget, seed, time_limit) -> None`` that
minimises ``problem`` (a :class:`Problem`: ``problem(x)`` for one point, ``problem.batch(X)`` for ``[n, D]``,
``initial_solution``, ``dimension``, ``evaluations``, ``final_target_hit``). When the budget, the target or the
wall time is reached, the next call of ``problem`` raises :class:`Stop`, which ends the run; a method may stop
earlier by itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command, machine, update_section

from stochgrad.runs.files import read_jsonl

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "coco_runs.jsonl"
DATA = HERE / "results" / "coco"
FIGURES = HERE.parent / "docs" / "figures" / "coco"
SIGMA0 = 2.0
FINAL = 1e-8
TARGETS = [10.0 ** (2 - 0.2 * k) for k in range(51)]          # 1e2 ... 1e-8, five per decade, as COCO
GROUPS = {"separable f1-5": range(1, 6), "moderate f6-9": range(6, 10), "ill-conditioned f10-14": range(10, 15),
          "multimodal f15-19": range(15, 20), "weak structure f20-24": range(20, 25)}
SUITES = {
    "bbob": {"dims": (2, 5, 10, 20, 40), "functions": tuple(range(1, 25))},
    "bbob-largescale": {"dims": (80, 160), "functions": (1, 2, 8, 10, 11, 12, 14, 15, 20)},
    # Gaussian noise: f101 sphere (moderate), f107 sphere, f110 Rosenbrock, f116 ellipsoid, f122 Schaffer F7,
    # f125 Griewank-Rosenbrock, f128 Gallagher (severe); the noisy analogues of bbob f1, f8, f10, f17, f19, f21.
    "bbob-noisy": {"dims": (2, 5, 10, 20, 40), "functions": (101, 107, 110, 116, 122, 125, 128)},
}


class Stop(Exception):
    """Raised by :class:`Problem` when the run is over (budget, final target or wall time)."""


def default_budget(dim: int) -> int:
    return (10_000 if dim <= 10 else 2_000 if dim <= 40 else 1_000) * dim


def default_instances(dim: int) -> tuple[int, ...]:
    return tuple(range(1, 6)) if dim <= 10 else (1, 2, 3)


class Problem:
    """A COCO problem as the methods see it, recording each run's best-so-far Δf against evaluations.

    ``f_opt`` is the problem's optimal value (Δf = f − f_opt); ``None`` for noisy problems, whose noise-free Δf
    is read back from COCO's own ``.tdat`` file after the run (:func:`tdat_hits`).
    """

    def __init__(self, problem, f_opt: float | None, budget: int, time_limit: float | None):
        self.problem, self.f_opt, self.budget, self.time_limit = problem, f_opt, budget, time_limit
        self.dimension = problem.dimension
        self.initial_solution = np.array(problem.initial_solution, dtype=float)
        self.lower_bounds, self.upper_bounds = np.array(problem.lower_bounds), np.array(problem.upper_bounds)
        self.best = math.inf
        self.hits: list[int | None] = [None] * len(TARGETS)
        self._next = 0
        self.f_seconds = 0.0
        self.start = time.perf_counter()
        self.time_capped = False
        self.max_batch = 0

    @property
    def evaluations(self) -> int:
        return int(self.problem.evaluations)

    @property
    def final_target_hit(self) -> bool:
        return bool(self.problem.final_target_hit)

    def out_of_time(self) -> bool:
        return self.time_limit is not None and time.perf_counter() - self.start >= self.time_limit

    def check(self) -> None:
        """Raise :class:`Stop` if the run is over."""
        if self.final_target_hit or self.evaluations >= self.budget:
            raise Stop
        if self.out_of_time():
            self.time_capped = True
            raise Stop

    def _eval(self, x: np.ndarray) -> float:
        t = time.perf_counter()
        y = float(self.problem(x))
        self.f_seconds += time.perf_counter() - t
        if self.f_opt is not None and y - self.f_opt < self.best:
            self.best = y - self.f_opt
            while self._next < len(TARGETS) and self.best <= TARGETS[self._next]:
                self.hits[self._next] = self.evaluations
                self._next += 1
        return y

    def __call__(self, x) -> float:
        self.check()
        self.max_batch = max(self.max_batch, 1)
        return self._eval(np.asarray(x, dtype=float))

    def batch(self, X) -> np.ndarray:
        """Values of the rows of ``X`` (``[n, D]``), one COCO call per row; checks the stop rules once, before."""
        self.check()
        X = np.asarray(X, dtype=float)
        self.max_batch = max(self.max_batch, len(X))
        return np.array([self._eval(x) for x in X])


# ------------------------------------------------------------------------------------------------ methods

def _minimize(p: Problem, budget: int, seed: int, time_limit: float | None, **options) -> None:
    import torch

    from stochgrad.optim import minimize

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(p.batch(x.detach().numpy()), dtype=x.dtype)

    minimize(f, torch.tensor(p.initial_solution, dtype=torch.float64), SIGMA0, budget=budget - p.evaluations,
             seed=seed, time_limit=time_limit, callback=lambda opt, row: p.final_target_hit, **options)


def stochgrad_default(p: Problem, budget: int, seed: int, time_limit: float | None) -> None:
    """`minimize(f, x0, sigma0, budget)` with no options (its defaults: the staged search), the batch evaluated
    row by row."""
    _minimize(p, budget, seed, time_limit)


def stochgrad_snes(p: Problem, budget: int, seed: int, time_limit: float | None) -> None:
    """`minimize(..., estimator="sf-antithetic")`: SNES-style natural steps on centred ranks (the earlier
    default)."""
    _minimize(p, budget, seed, time_limit, estimator="sf-antithetic")


def _cma(p: Problem, budget: int, seed: int, options: dict, popsize: int | None = None) -> None:
    import cma

    opts = {"maxfevals": budget - p.evaluations, "verbose": -9, "seed": seed + 1, **options}
    if popsize is not None:
        opts["popsize"] = popsize
    es = cma.CMAEvolutionStrategy(p.initial_solution, SIGMA0, opts)
    while not es.stop():
        X = es.ask()
        es.tell(X, p.batch(np.array(X)).tolist())


def cma_es(p: Problem, budget: int, seed: int, time_limit: float | None) -> None:
    """The `cma` package with its defaults (full covariance)."""
    _cma(p, budget, seed, {})


def sep_cma_es(p: Problem, budget: int, seed: int, time_limit: float | None) -> None:
    """The `cma` package with ``CMA_diagonal: True``."""
    _cma(p, budget, seed, {"CMA_diagonal": True})


def ipop_cma_es(p: Problem, budget: int, seed: int, time_limit: float | None) -> None:
    """IPOP-CMA-ES as ``cma.fmin(..., restarts=9, incpopsize=2)``: up to 9 restarts from x0, each with twice the
    population of the one before, until the budget is used."""
    lam = 4 + int(3 * math.log(p.dimension))
    for r in range(10):
        _cma(p, budget, seed + 1000 * r, {}, popsize=lam * 2 ** r)


def lbfgsb_fd(p: Problem, budget: int, seed: int, time_limit: float | None) -> None:
    """scipy's L-BFGS-B with its finite-difference gradient (2-point), from x0 and then from uniform random
    points in [-4, 4]^D until the budget is used."""
    from scipy.optimize import minimize as sp_minimize

    rng = np.random.default_rng(seed)
    x0 = p.initial_solution
    while True:
        p.check()
        sp_minimize(p, x0, method="L-BFGS-B", options={"maxfun": max(budget - p.evaluations, 1)})
        x0 = rng.uniform(-4, 4, p.dimension)


#: name -> callable(problem, budget, seed, time_limit) -> None. Add a method here, in one line.
METHODS: dict[str, Callable[[Problem, int, int, float | None], None]] = {
    "stochgrad-default": stochgrad_default,
    "stochgrad-snes": stochgrad_snes,
    "cma-es": cma_es,
    "sep-cma-es": sep_cma_es,
    "ipop-cma-es": ipop_cma_es,
    "lbfgsb-fd": lbfgsb_fd,
}
CMA_VARIANTS = ("cma-es", "sep-cma-es", "ipop-cma-es")


# ------------------------------------------------------------------------------------------------ running

def _suite(suite: str, fid: int, dim: int, instance: int):
    import cocoex

    cocoex.utilities.silence = True
    index = fid - 100 if suite == "bbob-noisy" else fid
    return cocoex.Suite(suite, "", f"dimensions:{dim} instance_indices:{instance} function_indices:{index}")


def x_opt(suite: str, fid: int, dim: int, instance: int) -> tuple[np.ndarray, object]:
    """COCO's optimal point of a problem ``[D]`` (cocoex writes it to a file in the working directory) and an
    unobserved copy of the problem (free it when done)."""
    s = _suite(suite, fid, dim, instance)
    q = s.get_problem_by_function_dimension_instance(fid, dim, instance)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            q._best_parameter("print")
            xopt = np.loadtxt("._bbob_problem_best_parameter.txt", ndmin=1)
        finally:
            os.chdir(cwd)
    return xopt, q


def f_opt(suite: str, fid: int, dim: int, instance: int) -> float:
    """The optimal value of a noise-free problem: f at COCO's x_opt, evaluated on an unobserved copy."""
    xopt, q = x_opt(suite, fid, dim, instance)
    value = float(q(xopt))
    q.free()
    return value


def tdat_hits(path: Path) -> tuple[list[int | None], float]:
    """First evaluation at which each target was reached, and the final Δf, read from the last run recorded in
    a COCO ``.tdat`` file (its third column is the best noise-free f − f_opt so far)."""
    blocks, cur = [], None
    for line in path.read_text().splitlines():
        if line.startswith("%"):
            cur = []
            blocks.append(cur)
        elif line.strip() and cur is not None:
            cols = line.split()
            cur.append((int(cols[0]), float(cols[2])))
    hits: list[int | None] = [None] * len(TARGETS)
    best = math.inf
    for evals, delta in blocks[-1] if blocks else []:
        best = min(best, delta)
        for k, t in enumerate(TARGETS):
            if hits[k] is None and best <= t:
                hits[k] = evals
    return hits, best


def run_one(suite: str, method: str, fid: int, dim: int, instance: int, budget: int, time_limit: float | None,
            observer=None, seed: int | None = None) -> dict:
    """One run: returns its JSON record (see the module docstring)."""
    noisy = suite == "bbob-noisy"
    fo = None if noisy else f_opt(suite, fid, dim, instance)
    s = _suite(suite, fid, dim, instance)
    raw = s.get_problem_by_function_dimension_instance(fid, dim, instance)
    if observer is not None:
        raw.observe_with(observer)
    p = Problem(raw, fo, budget, time_limit)
    seed = instance if seed is None else seed
    stop = "method"
    try:
        METHODS[method](p, budget, seed, time_limit)
    except Stop:
        stop = "time" if p.time_capped else "target" if p.final_target_hit else "budget"
    seconds = time.perf_counter() - p.start
    evals, solved, max_batch, f_seconds = p.evaluations, p.final_target_hit, p.max_batch, p.f_seconds
    hits, best = p.hits, p.best
    raw.free()                                            # closes COCO's files for this run
    if noisy and observer is not None:
        tdat = Path(observer.result_folder) / f"data_f{fid}" / f"bbobexp_f{fid}_DIM{dim}.tdat"
        hits, best = tdat_hits(tdat)
        solved = hits[-1] is not None      # on the noise-free Δf that COCO logs (final_target_hit sees the noise)
    return {"suite": suite, "method": method, "function": fid, "dim": dim, "instance": instance, "budget": budget,
            "time_limit": time_limit, "seed": seed, "evals": evals, "solved": solved,
            "evals_to_solve": (hits[-1] if hits[-1] is not None else evals) if solved else None,
            "best_delta": best, "hits": hits, "seconds": seconds, "f_seconds": f_seconds, "stop": stop,
            "time_capped": stop == "time", "max_batch": max_batch, "command": command()}


def _key(r: dict) -> tuple:
    return (r["suite"], r["method"], r["function"], r["dim"], r["instance"], r["budget"])


def load(path: Path = RESULTS) -> list[dict]:
    """The run records in ``path`` (a torn last line from an interrupted run is ignored)."""
    return read_jsonl(path)


def run(suite: str, dims, functions, methods, instances=None, budget_per_dim: int | None = None,
        time_limit: float | None = None, results: Path = RESULTS, data: Path = DATA, verbose: bool = True) -> list:
    """Run every (dim, function, instance, method) not yet in ``results``; append each record as it finishes."""
    import cocoex
    import torch

    torch.set_num_threads(1)
    cocoex.utilities.silence = True
    import cma  # noqa: F401  (imported here so that no run's wall time includes an import)
    import scipy.optimize  # noqa: F401

    import stochgrad.optim  # noqa: F401
    done = {_key(r) for r in load(results)}
    observers = {}
    new = []
    results.parent.mkdir(parents=True, exist_ok=True)
    for dim in dims:
        budget = default_budget(dim) if budget_per_dim is None else budget_per_dim * dim
        for inst in (instances or default_instances(dim)):      # instance outermost: a run cut short still
            for fid in functions:                                # covers every function on its first instances
                for method in methods:
                    if (suite, method, fid, dim, inst, budget) in done:
                        continue
                    if method not in observers:
                        out = data / suite / method
                        out.mkdir(parents=True, exist_ok=True)
                        observers[method] = cocoex.Observer(
                            "bbob", f"outer_folder: {out} result_folder: run algorithm_name: {method} "
                            f"algorithm_info: stochgrad-benchmark")
                    rec = run_one(suite, method, fid, dim, inst, budget, time_limit, observers[method])
                    with results.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    new.append(rec)
                    if verbose:
                        print(f"{suite} D={dim} f{fid} i{inst} {method:18s} evals={rec['evals']:>8d} "
                              f"solved={int(rec['solved'])} stop={rec['stop']:6s} {rec['seconds']:7.1f}s",
                              flush=True)
    return new


# ------------------------------------------------------------------------------------------------ report

def aRT(records: list[dict]) -> tuple[float, int]:
    """(aRT to the final target, runs solved): evaluations summed over runs (a solved run counts its evaluations
    up to the target, an unsolved one all of them) divided by the number of solved runs; inf if none."""
    solved = [r for r in records if r["solved"]]
    total = sum(r["evals_to_solve"] if r["solved"] else r["evals"] for r in records)
    return (total / len(solved) if solved else math.inf), len(solved)


def _cells(rows: list[dict]) -> dict:
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["suite"], r["dim"], r["function"], r["method"]), []).append(r)
    return cells


def _fmt(art: float, solved: int, n: int) -> str:
    return f"{art:.0f} ({solved}/{n})" if solved else f"∞ (0/{n})"


def table(rows: list[dict], suite: str, dim: int, methods: list[str]) -> tuple[list[str], dict]:
    cells = _cells(rows)
    fids = sorted({r["function"] for r in rows if r["suite"] == suite and r["dim"] == dim})
    head = "| f | " + " | ".join(methods) + " | ours / best CMA |"
    lines = [head, "|---:|" + "---:|" * (len(methods) + 1)]
    stats = {m: {"solved_functions": 0, "beats_all_cma": []} for m in methods}
    for fid in fids:
        arts = {}
        out = []
        for m in methods:
            recs = cells.get((suite, dim, fid, m), [])
            if not recs:
                out.append("—")
                continue
            art, solved = aRT(recs)
            arts[m] = art
            stats[m]["solved_functions"] += solved > 0
            capped = sum(r["time_capped"] for r in recs)
            out.append(_fmt(art, solved, len(recs)) + (f" †{capped}" if capped else ""))
        cma = [arts[m] for m in CMA_VARIANTS if m in arts]
        best_cma = min(cma) if cma else math.inf
        ours = arts.get("stochgrad-default", math.inf)
        ratio = (f"{ours / best_cma:.2f}" if math.isfinite(ours) and math.isfinite(best_cma)
                 else "—" if not math.isfinite(ours) else "ours only")
        for m in methods:
            others = [arts[c] for c in CMA_VARIANTS if c in arts and c != m]
            if m in arts and math.isfinite(arts[m]) and others and all(arts[m] < o for o in others):
                stats[m]["beats_all_cma"].append(fid)
        lines.append(f"| f{fid} | " + " | ".join(out) + f" | {ratio} |")
    return lines, stats


def ecdf_plot(rows: list[dict], suite: str, dim: int, methods: list[str], path: Path) -> Path:
    """Runtime ECDF per function group: the fraction of (function, instance, target) triples reached within
    evaluations/D, over the 51 targets 10^{2..-8}, as COCO plots it (without simulated restarts). ipop-cma-es's
    first run is cma-es's run (same seed and population), so the two curves coincide until cma-es stops."""
    from stochgrad.runs.files import new_figure, save_figure

    groups = {**GROUPS, "all functions": range(1, 200)}
    fig, axes = new_figure((16, 8), 2, 3)
    budget = max((r["budget"] for r in rows if r["suite"] == suite and r["dim"] == dim), default=1)
    for ax, (name, fids) in zip(axes.flat, groups.items()):
        for m in methods:
            recs = [r for r in rows if r["suite"] == suite and r["dim"] == dim and r["method"] == m
                    and r["function"] in fids]
            if not recs:
                continue
            times = sorted(h / dim for r in recs for h in r["hits"] if h is not None)
            n = len(recs) * len(TARGETS)
            xs = [1.0 / dim, *times, budget / dim]
            ys = [0.0, *[(k + 1) / n for k in range(len(times))], len(times) / n]
            ax.step(xs, ys, where="post", label=m, lw=2.2 if m == "stochgrad-default" else 1.3,
                    ls="--" if m == "cma-es" else ":" if m == "sep-cma-es" else "-")
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_title(f"{suite} D={dim}: {name}")
        ax.set_xlabel("evaluations / D")
        ax.set_ylabel("fraction of (run, target) pairs")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def overhead(rows: list[dict], suite: str, dim: int, method: str) -> float | None:
    """Median over runs of (wall time − time in f) per evaluation, in µs."""
    vals = [(r["seconds"] - r["f_seconds"]) / r["evals"] * 1e6 for r in rows
            if r["suite"] == suite and r["dim"] == dim and r["method"] == method and r["evals"]]
    return statistics.median(vals) if vals else None


def report(results: Path = RESULTS, write: bool = True, figures: Path = FIGURES) -> str:
    rows = load(results)
    lines = ["## COCO (bbob): the referee", ""]
    lines += [f"Machine: {machine()}.", "",
              ("Written by `python benchmarks/coco.py report` from `benchmarks/results/coco_runs.jsonl` (one JSON "
              "line per run). Every run: a fresh COCO problem, COCO's initial solution, σ0 = 2, stop at Δf < 1e-8 "
              "(COCO's final target) or the budget or the wall-time cap. Cells: aRT to Δf = 1e-8 (evaluations "
              "summed over runs, an unsolved run counting all its evaluations, divided by the runs solved; ∞: none "
              "solved) and (runs solved / runs); † n: n runs stopped by the wall-time cap. `ours / best CMA`: "
              "aRT of stochgrad-default over the lowest aRT of cma-es, sep-cma-es and ipop-cma-es. Methods: "
              "`stochgrad-default` = `minimize(f, x0, 2.0, budget)` with no options (the staged search: "
              "quasi-Newton on orthogonal differences, then natural steps with restarts); `stochgrad-snes` = "
              "`estimator=\"sf-antithetic\"` (SNES-style natural steps, the default before the staged search; "
              "its records were run as `stochgrad-default` before that change); `cma-es` = `cma` defaults; "
              "`sep-cma-es` = `CMA_diagonal: True`; `ipop-cma-es` = up to 9 restarts from x0 doubling the "
              "population; `lbfgsb-fd` = scipy L-BFGS-B with 2-point finite differences, restarted from uniform "
              "points in [-4, 4]^D until the budget is used."), "",
              ("COCO's own data (`.info`, `.dat`, `.tdat`, ... written by `cocoex.Observer`) is out of git, under "
               "`benchmarks/results/coco/<suite>/<method>/`; rerunning the commands below into an empty results "
               "file regenerates it (`--results` and `--data` choose other places), and `python -m cocopp "
               "benchmarks/results/coco/bbob/*` post-processes it with COCO's tools (ECDFs with simulated restarts, "
               "aRT tables against COCO's reference algorithms). The ECDFs here are simpler: the fraction of "
               "(run, target) pairs reached, over the 51 targets 10^{2, 1.8, ..., -8}, without simulated restarts; "
               "Δf = f − f_opt with f_opt = f(x_opt) from COCO's `_best_parameter`, which agrees with COCO's "
               "final target on f1 (tests/benchmarks/test_coco.py). On bbob-noisy, Δf is the noise-free value that "
               "COCO logs in its `.tdat` file, and a run counts as solved when that reaches 1e-8."), ""]
    suites = [s for s in SUITES if any(r["suite"] == s for r in rows)]
    summary = []
    intro = len(lines)
    for suite in suites:
        for dim in sorted({r["dim"] for r in rows if r["suite"] == suite}):
            sub = [r for r in rows if r["suite"] == suite and r["dim"] == dim]
            methods = [m for m in METHODS if any(r["method"] == m for r in sub)]
            insts = sorted({r["instance"] for r in sub})
            budgets = sorted({r["budget"] for r in sub})
            caps = sorted({r["time_limit"] for r in sub}, key=lambda v: (v is None, v))
            lines += [f"### {suite}, D = {dim}", "",
                      f"Instances {','.join(map(str, insts))}; budget {', '.join(f'{b:,}' for b in budgets)} "
                      f"evaluations ({budgets[0] // dim}·D); wall-time cap per run: "
                      + ", ".join("none" if c is None else f"{c:g} s" for c in caps) + ".", ""]
            tab, stats = table(rows, suite, dim, methods)
            lines += tab + [""]
            lines.append("Functions solved (at least one run): " + ", ".join(
                f"{m} {stats[m]['solved_functions']}" for m in methods) + ". Lower aRT than every CMA-ES variant "
                "(the other two for a CMA-ES variant): " + "; ".join(
                f"{m} {len(stats[m]['beats_all_cma'])}" + (f" (f{', f'.join(map(str, stats[m]['beats_all_cma']))})"
                                                            if stats[m]["beats_all_cma"] else "")
                for m in methods) + ".")
            ov = {m: overhead(rows, suite, dim, m) for m in methods}
            lines += ["", "Optimiser overhead per evaluation (median over runs of wall time minus time in f, per "
                      "evaluation): " + ", ".join(f"{m} {v:.1f} µs" for m, v in ov.items() if v is not None) + "."]
            capped = [r for r in sub if r["time_capped"]]
            if capped:
                lines.append("Stopped by the wall-time cap: " + ", ".join(
                    f"{r['method']} f{r['function']} i{r['instance']} at {r['evals']:,} evaluations" for r in capped)
                    + ".")
            if write:
                png = ecdf_plot(rows, suite, dim, methods, figures / f"{suite}_D{dim}_ecdf.png")
                rel = os.path.relpath(png, HERE.parent / "docs")
                lines += ["", f"![runtime ECDF, {suite} D = {dim}]({rel})"]
            lines.append("")
            summary.append((suite, dim, {m: stats[m]["solved_functions"] for m in methods},
                            stats.get("stochgrad-default", {}).get("beats_all_cma", [])))
    if summary:
        methods = [m for m in METHODS if any(m in solved for _, _, solved, _ in summary)]
        head = ["### Headline: functions solved (at least one run reaching Δf < 1e-8) per method", "",
                "| suite | D | " + " | ".join(methods) + " | stochgrad-default lower aRT than every CMA-ES variant |",
                "|---|---:|" + "---:|" * (len(methods) + 1)]
        for suite, dim, solved, beats in summary:
            head.append(f"| {suite} | {dim} | " + " | ".join(str(solved.get(m, "—")) for m in methods)
                        + f" | {len(beats)}" + (f" (f{', f'.join(map(str, beats))})" if beats else "") + " |")
        commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
        head += ["", "Commands, in the order run (each run is one JSON line; a run already present is skipped): "
                 + ", ".join(f"`{c}`" for c in commands) + ", then `python benchmarks/coco.py report`.", ""]
        lines[intro:intro] = head
    text = "\n".join(lines)
    if write:
        update_section("coco", text)
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the benchmark (resumable: runs already in the results file are skipped)")
    r.add_argument("--suite", default="bbob", choices=list(SUITES))
    r.add_argument("--dims", default=None, help="comma-separated; default: the suite's")
    r.add_argument("--functions", default=None, help="comma-separated; default: the suite's")
    r.add_argument("--instances", default=None, help="comma-separated; default 1-5 at D <= 10, 1-3 above")
    r.add_argument("--methods", default=",".join(METHODS))
    r.add_argument("--budget-per-dim", type=int, default=None,
                   help="evaluations per dimension; default 1e4 at D <= 10, 2e3 at D <= 40, 1e3 above")
    r.add_argument("--time-limit", type=float, default=None, help="wall-time cap per run, seconds")
    r.add_argument("--results", type=Path, default=RESULTS)
    r.add_argument("--data", type=Path, default=DATA, help="folder for COCO's data files")
    rep = sub.add_parser("report", help="tables and ECDF plots into docs/ from the results file")
    rep.add_argument("--results", type=Path, default=RESULTS)
    rep.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        spec = SUITES[args.suite]
        dims = [int(d) for d in args.dims.split(",")] if args.dims else list(spec["dims"])
        fids = [int(f) for f in args.functions.split(",")] if args.functions else list(spec["functions"])
        insts = [int(i) for i in args.instances.split(",")] if args.instances else None
        methods = args.methods.split(",")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            ap.error(f"--methods: unknown {unknown}; known: {list(METHODS)}")
        run(args.suite, dims, fids, methods, insts, args.budget_per_dim, args.time_limit, args.results, args.data)
    else:
        print(report(args.results, write=not args.no_write))


if __name__ == "__main__":
    main()
