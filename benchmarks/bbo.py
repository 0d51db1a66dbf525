"""Black-box minimisation: the library's search-gradient optimisers side by side with CMA-ES.

    python benchmarks/bbo.py run --dims 10,100 --seeds 5          # appends to benchmarks/results/bbo.jsonl
    python benchmarks/bbo.py run --dims 1000 --seeds 5 --cma-time-limit 300
    python benchmarks/bbo.py report                                # tables + plots into docs/

Methods (every one starts from x0 = (domain/4, …), σ0 = domain/10, and gets the same budget of evaluations):

- ``openai-es``: score function on antithetic pairs with centred ranks and Adam (Salimans et al. 2017);
- ``mvd``: coupled measure-valued derivative, one pair per coordinate per step;
- ``ccmvd``: convex-combined MVD (half the step's evaluations on antithetic score-function pairs);
- ``auto``: the budget-aware split;
- ``cma-es``: ``cma.CMAEvolutionStrategy`` with its defaults (full covariance; at D = 1000 it is slow, so a
  wall-clock cap applies and is reported);
- ``sep-cma-es``: the same with ``CMA_diagonal=True`` (linear time per sample), the usual choice at large D.

All of ours use centred ranks and natural-gradient updates of the mean and the log-scale (Δμ = −σ²ĝ_μ,
Δlog σ = −η_σ σ ĝ_σ / 2 with SNES's η_σ = (3 + ln D)/(5√D)), so σ adapts as in SNES; they differ only in the
gradient estimator and the evaluations it needs per step: λ = 4 + 3 ln D (rounded up to even) for the score
function, CCMVD and Auto, and 4·D for MVD (one pair per coordinate for loc and for scale). Each run records
the evaluations at which the target is first reached, the best value at the full budget, and the time spent
inside the optimiser (ask + tell, without evaluating f) per evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from stochgrad.lab.functions import FUNCTIONS
from stochgrad.optim import SearchGradient

RESULTS = Path(__file__).resolve().parent / "results" / "bbo.jsonl"
FUNCS = ["sphere", "rosenbrock", "rastrigin", "ackley", "styblinski-tang"]
METHODS = ["openai-es", "mvd", "ccmvd", "auto", "cma-es", "sep-cma-es"]


def target(fn: str, dim: int) -> float:
    """The value a run must reach (stated in docs/benchmarks.md)."""
    return {"sphere": 1e-6 * dim, "rosenbrock": 1.0 * dim, "rastrigin": 1.0 * dim, "ackley": 1.0,
            "styblinski-tang": -38.0 * dim}[fn]


def budget(dim: int) -> int:
    return 500 * dim if dim <= 100 else 200 * dim


def popsize(method: str, dim: int) -> int:
    lam = 4 + math.ceil(3 * math.log(dim))
    lam += lam % 2
    return 4 * dim if method == "mvd" else max(lam, 8 if method == "ccmvd" else lam)


def _ours(method: str, fn_name: str, dim: int, seed: int, total: int) -> dict:
    fn = FUNCTIONS[fn_name]
    x0 = torch.full((dim,), 0.25 * fn.domain, dtype=torch.float64)
    sigma0 = 0.1 * fn.domain
    est = {"openai-es": "sf-antithetic", "mvd": "mvd", "ccmvd": "ccmvd", "auto": "auto"}[method]
    opt = SearchGradient(x0, sigma0, estimator=est, popsize=popsize(method, dim), optimizer="natural",
                         fitness_shaping="centered-ranks", seed=seed)
    tgt, hit, curve, overhead = target(fn_name, dim), None, [], 0.0
    while opt.n_evals + opt.next_evals() <= total:
        t0 = time.perf_counter()
        x = opt.ask()
        overhead += time.perf_counter() - t0
        values = fn(x)
        t0 = time.perf_counter()
        opt.tell(values)
        overhead += time.perf_counter() - t0
        curve.append((opt.n_evals, opt.best_f))
        if hit is None and opt.best_f <= tgt:
            hit = opt.n_evals
    return {"evals_to_target": hit, "best": opt.best_f, "n_evals": opt.n_evals,
            "curve": curve[:: max(1, len(curve) // 200)] + curve[-1:], "overhead_per_eval_s": overhead / max(1, opt.n_evals),
            "popsize": popsize(method, dim)}


def _cma(method: str, fn_name: str, dim: int, seed: int, total: int, time_limit: float) -> dict:
    import cma

    fn = FUNCTIONS[fn_name]
    opts = {"seed": seed + 1, "verbose": -9, "maxfevals": total, "tolfun": 0, "tolx": 0, "tolfunhist": 0,
            "tolstagnation": 10**9}
    if method == "sep-cma-es":
        opts["CMA_diagonal"] = True
    es = cma.CMAEvolutionStrategy(np.full(dim, 0.25 * fn.domain), 0.1 * fn.domain, opts)
    tgt, hit, curve, overhead, n, best = target(fn_name, dim), None, [], 0.0, 0, math.inf
    start = time.perf_counter()
    capped = False
    while n + es.popsize <= total:
        if time.perf_counter() - start > time_limit:
            capped = True
            break
        t0 = time.perf_counter()
        X = es.ask()
        overhead += time.perf_counter() - t0
        values = fn(torch.as_tensor(np.asarray(X), dtype=torch.float64)).tolist()
        t0 = time.perf_counter()
        es.tell(X, values)
        overhead += time.perf_counter() - t0
        n += len(X)
        best = min(best, min(values))
        curve.append((n, best))
        if hit is None and best <= tgt:
            hit = n
        if es.stop() and "maxfevals" not in es.stop():
            es = cma.CMAEvolutionStrategy(es.result.xbest, 0.1 * fn.domain, {**opts, "seed": opts["seed"] + n})
    return {"evals_to_target": hit, "best": best, "n_evals": n, "curve": curve[:: max(1, len(curve) // 200)],
            "overhead_per_eval_s": overhead / max(1, n), "capped_at_s": time_limit if capped else None}


def run(args: argparse.Namespace) -> None:
    from _report import command

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            done.add((r["method"], r["function"], r["dim"], r["seed"]))
    for dim in [int(d) for d in args.dims.split(",")]:
        for fn in args.functions.split(","):
            for method in args.methods.split(","):
                for seed in range(args.seeds):
                    key = (method, fn, dim, seed)
                    if key in done:
                        continue
                    t0 = time.perf_counter()
                    if method.endswith("cma-es"):
                        r = _cma(method, fn, dim, seed, budget(dim), args.cma_time_limit)
                    else:
                        r = _ours(method, fn, dim, seed, budget(dim))
                    r.update(method=method, function=fn, dim=dim, seed=seed, budget=budget(dim),
                             target=target(fn, dim), seconds=time.perf_counter() - t0, command=command())
                    with RESULTS.open("a") as fh:
                        fh.write(json.dumps(r) + "\n")
                    print(f"{method:>10} {fn:>15} D={dim:<5} seed {seed}: best {r['best']:.4g}, to target "
                          f"{r['evals_to_target']}, {r['seconds']:.1f}s", flush=True)


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _report import command, machine, update_section

    rows = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["function"], r["dim"], r["method"]), []).append(r)
    dims = sorted({r["dim"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    lines = [
        "## Black-box minimisation against CMA-ES", "",
        "Median over seeds of the evaluations needed to reach the target (in parentheses: seeds that reached it; "
        "`—`: none did within the budget), and the median best value at the full budget. Start x0 = (d/4, …), "
        "σ0 = d/10 for the function's domain half-width d. Budget: 500·D evaluations at D ≤ 100, 200·D at "
        "D = 1000. Targets: sphere 1e-6·D, rosenbrock 1·D, rastrigin 1·D, ackley 1, styblinski-tang −38·D "
        "(the global minimum is −39.17·D). Ours: centred ranks and natural-gradient (SNES-style) updates of μ "
        "and log σ; λ = 4 + 3 ln D evaluations per step (even), 4·D for MVD. `cma-es` is the `cma` package's "
        "default (full covariance); at "
        f"D = 1000 it is capped in wall-clock time (see the last column); `sep-cma-es` is its diagonal variant.",
        "", "Commands: " + ", ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "?") for r in rows)) +
        f", then `{command()}`  ", f"Machine: {machine()}", "",
    ]
    for dim in dims:
        lines += [f"### D = {dim}", "",
                  "| function | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for fn in FUNCS:
            cells = []
            for m in methods:
                rs = by.get((fn, dim, m), [])
                if not rs:
                    cells.append("")
                    continue
                hits = [r["evals_to_target"] for r in rs if r["evals_to_target"] is not None]
                med_best = statistics.median(r["best"] for r in rs)
                evals = f"{int(statistics.median(hits))} ({len(hits)}/{len(rs)})" if hits else f"— (0/{len(rs)})"
                capped = any(r.get("capped_at_s") for r in rs)
                cells.append(f"{evals}; best {med_best:.3g}" + (" †" if capped else ""))
            lines.append(f"| {fn} | " + " | ".join(cells) + " |")
        lines.append("")
        over = []
        for m in methods:
            vals = [r["overhead_per_eval_s"] for fn in FUNCS for r in by.get((fn, dim, m), [])]
            if vals:
                over.append(f"{m} {statistics.median(vals) * 1e6:.1f} µs")
        lines += [f"Optimiser overhead per evaluation at D = {dim} (median over runs, ask + tell without f): "
                  + ", ".join(over) + ".", ""]
    if any(r.get("capped_at_s") for r in rows):
        capped = sorted({(r["dim"], r["capped_at_s"]) for r in rows if r.get("capped_at_s")})
        lines += ["† stopped by the wall-clock cap before the budget: " +
                  ", ".join(f"D = {d}: {c:.0f} s per run" for d, c in capped) +
                  "; the evaluations it reached are in benchmarks/results/bbo.jsonl.", ""]
    plot_dir = Path(__file__).resolve().parents[1] / "docs" / "bbo"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for fn in FUNCS:
        fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.4), squeeze=False)
        for ax, dim in zip(axes[0], dims):
            for i, m in enumerate(methods):
                rs = by.get((fn, dim, m), [])
                if not rs:
                    continue
                grid = np.unique(np.concatenate([[c[0] for c in r["curve"]] for r in rs]))
                curves = [np.interp(grid, [c[0] for c in r["curve"]], [c[1] for c in r["curve"]],
                                    right=r["curve"][-1][1]) for r in rs]
                med = np.median(np.stack(curves), 0)
                shift = 0.0 if fn != "styblinski-tang" else 39.16616570377142 * dim
                ax.plot(grid, med + shift, label=m, color=f"C{i}")
            ax.set_yscale("log")
            ax.set_xscale("log")
            ax.set_title(f"{fn}, D = {dim}", fontsize=9)
            ax.set_xlabel("evaluations")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("best f" + (" − f*" if fn == "styblinski-tang" else "") + " (median over seeds)")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot_dir / f"{fn}.png", dpi=110)
        plt.close(fig)
    lines += ["Convergence plots (median best value against evaluations): " +
              ", ".join(f"[{fn}](bbo/{fn}.png)" for fn in FUNCS), ""]
    update_section("bbo", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dims", default="10,100")
    r.add_argument("--functions", default=",".join(FUNCS))
    r.add_argument("--methods", default=",".join(METHODS))
    r.add_argument("--seeds", type=int, default=5)
    r.add_argument("--cma-time-limit", type=float, default=600.0)
    r.set_defaults(fn=run)
    sub.add_parser("report").set_defaults(fn=report)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.fn(args)


if __name__ == "__main__":
    main()
