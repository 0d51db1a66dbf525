"""CCMVD and CCSF against a plain score function at equal evaluations, the bias of batch weights, and Auto
against the best fixed estimator from a cold start on the suite of ``auto_suite.py``.

    python benchmarks/hybrids.py [--repeats 1000] [--part variance,bias,auto]

Writes three sections of docs/benchmarks.md: hybrid-variance, hybrid-bias, auto-vs-fixed.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _report import command, machine, update_section

import stochgrad as sg
from stochgrad.lab.functions import FUNCTIONS
from stochgrad.lab.metrics import Problem, quality

WARMUP = 10


def _warm(est, problem, dist, gen):
    for _ in range(WARMUP):
        est.estimate(problem.function, dist, generator=gen, params=("loc",))
    return est.estimate(problem.function, dist, generator=gen, params=("loc",))


def variance_part(repeats: int) -> None:
    rows = []
    settings = {10: [(10, 1, 3), (10, 1, 5), (5, 1, 5), (10, 2, 3)], 100: [(50, 1, 10), (50, 1, 25), (100, 1, 25),
                                                                           (50, 2, 10)]}
    for dim, triples in settings.items():
        problem = Problem.default(FUNCTIONS["rosenbrock"], dim)
        exact = problem.exact()
        dist = problem.dist(copies=repeats)
        for N, M, K in triples:
            budget = 2 * (N + M * K)
            gen = torch.Generator().manual_seed(0)
            sf = sg.ScoreFunction(budget, baseline="loo", antithetic=True).estimate(
                problem.function, dist, generator=gen, params=("loc",))
            sf_err = (sf.grad["loc"] - exact) ** 2
            row = {"D": dim, "N": N, "M": M, "K": K, "budget": budget}
            variants = [("CCMVD", sg.CCMVD(N, M, K)), ("CCSF", sg.CCSF(N, M, K))] if M * K >= 2 else \
                [("CCMVD", sg.CCMVD(N, M, K))]
            if M >= 2:
                variants.append(("CCMVD batch", sg.CCMVD(N, M, K, weights="batch")))
            for name, est in variants:
                g = _warm(est, problem, dist, gen)
                comps = g.info["components"]["loc"]
                err = (g.grad["loc"] - exact) ** 2
                chosen = float(err.gather(-1, comps).mean() / sf_err.gather(-1, comps).mean())
                overall = float(err.sum(-1).mean() / sf_err.sum(-1).mean())
                row[name] = (chosen, overall)
            rows.append(row)
            print(row, flush=True)
    names = ["CCMVD", "CCSF", "CCMVD batch"]
    lines = [
        "## CCMVD and CCSF: variance reduction on the chosen components", "",
        "Rosenbrock, gradient with respect to μ under N(μ, 0.1²) at the lab's fixed point. Each cell is the mean "
        "squared error of the hybrid divided by that of a plain score function with the same budget 2(N + M·K) "
        f"(antithetic pairs, leave-one-pair-out baseline), over {repeats} independent estimates after "
        f"{WARMUP} warm-up estimates (running weights and selection need a history). First number: on the K "
        "chosen components; second: on all components. Below 1 means the hybrid is better. Selection: the K "
        "components with the largest running score-function variance.", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}", "",
        "| D | N | M | K | evaluations | " + " | ".join(names) + " |",
        "|---:|---:|---:|---:|---:|" + "---|" * len(names),
    ]
    for r in rows:
        cells = [f"{r[n][0]:.3f} / {r[n][1]:.3f}" if n in r else "—" for n in names]
        lines.append(f"| {r['D']} | {r['N']} | {r['M']} | {r['K']} | {r['budget']} | " + " | ".join(cells) + " |")
    lines += ["", "CCMVD's gain on the chosen components comes from MVD: CCSF, which spends the same evaluations "
              "on a second score function, does not reduce the error there (its second estimate has only M·K "
              "pairs and a leave-one-pair-out baseline from very few pairs). On all components the hybrids pay for "
              "the split budget: the components without MVD get a score function with fewer evaluations."]
    update_section("hybrid-variance", "\n".join(lines))


def bias_part(repeats: int) -> None:
    problem = Problem.default(FUNCTIONS["rosenbrock"], 10)
    exact = problem.exact()
    dist = problem.dist(copies=repeats)
    rows = []
    for N, M, K in [(2, 2, 5), (5, 2, 5), (10, 4, 5)]:
        for weights in ("running", "batch"):
            gen = torch.Generator().manual_seed(3)
            g = _warm(sg.CCMVD(N, M, K, weights=weights), problem, dist, gen)
            q = quality(g.grad["loc"], exact)
            rows.append((N, M, K, weights, q["bias_rel"], q["bias_max_z"], q["rel_mse"]))
            print(rows[-1], flush=True)
    lines = [
        "## CCMVD: the bias of batch weights", "",
        "With `weights=\"batch\"` the combination weights come from the variances of the current samples, which "
        "are correlated with the estimates they weigh; with `\"running\"` they come from earlier estimates only. "
        f"Rosenbrock D = 10, σ = 0.1, {repeats} independent estimates after {WARMUP} warm-up estimates; bias = "
        "‖mean ĝ − g‖/‖g‖, max |z| = largest per-component bias divided by its standard error (values above "
        "about 4 mean a bias is detected).", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}", "",
        "| N | M | K | weights | relative bias | max z | relative MSE |", "|---:|---:|---:|---|---:|---:|---:|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.4f} | {r[5]:.1f} | {r[6]:.4f} |" for r in rows]
    update_section("hybrid-bias", "\n".join(lines))


def auto_part(repeats: int, dims: tuple[int, ...] = (10, 40)) -> None:
    """Auto against the best fixed estimator on the suite of ``benchmarks/auto_suite.py``, from a cold start."""
    from auto_suite import FIXED, STEPS, cells, cold_start_mse

    rows = []
    for c in cells(dims=dims):
        r = {n: cold_start_mse(n, c, repeats, seed=11) for n in (*FIXED, "auto")}
        fixed = {n: v for n, v in r.items() if v is not None and n != "auto"}
        best = min(fixed, key=fixed.get)
        rows.append((c, r, best, r["auto"] / fixed[best]))
        print(c.problem, c.dim, c.sigma, c.budget, f"{rows[-1][-1]:.3f}", flush=True)
    ratios = [row[-1] for row in rows]
    held = [row[-1] for row in rows if row[0].held_out]
    tuned = [row[-1] for row in rows if not row[0].held_out]
    misses = [row for row in rows if row[-1] > 1.10]
    worst = max(rows, key=lambda row: row[-1])

    def fmt(v):
        return "—" if v is None else f"{v:.4g}"

    lines = [
        "## Auto against the best fixed estimator, from a cold start", "",
        f"Relative MSE ‖ĝ − g‖²/‖g‖² averaged over estimates 1–{STEPS} of a fresh estimator (the cold start "
        f"counts) and over {repeats} independent copies, at the same point; equal evaluations B per estimate. "
        "Problems (see `benchmarks/auto_suite.py`): the lab's MVD-favoured sphere, ellipsoid and Rosenbrock at "
        "σ = 0.1; non-separable functions of a weighted sum of every coordinate (sum-quartic, sum-exp, "
        "sum-cos, sum-logistic) and a product of every coordinate at σ = 0.1, 0.3, 0.6; discrete problems with "
        "interacting f (Bernoulli, Categorical, Poisson); D = " + ", ".join(map(str, dims)) + "; budgets B = D "
        "(below 2D: MVD cannot cover every component), 4D and 16D. Gradient with respect to μ (Normal) or the "
        "discrete family's parameter. Ratio = Auto / best of (sf-loo, sf-antithetic on Normal, mvd and "
        "mvd-shared where B ≥ 2D). Held out (not looked at while Auto's rules were designed, except in one "
        "development run): sum-cos, sum-logistic, bernoulli-product, poisson-square. Target: never above "
        "1.10, below 1 on average.", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}", "",
        f"Mean ratio {statistics.mean(ratios):.3f} (geometric {statistics.geometric_mean(ratios):.3f}); worst "
        f"{worst[-1]:.3f} ({worst[0].problem}, D = {worst[0].dim}, σ = {worst[0].sigma}, B = {worst[0].budget}); "
        f"cells above 1.10: {len(misses)} of {len(rows)}. Tuned cells: mean {statistics.mean(tuned):.3f}, worst "
        f"{max(tuned):.3f}; held-out cells: mean {statistics.mean(held):.3f}, worst {max(held):.3f}.", "",
        "| problem | D | σ | B | sf-loo | sf-antithetic | mvd | mvd-shared | auto | best | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for c, r, best, ratio in rows:
        lines.append(f"| {c.problem}{' (held out)' if c.held_out else ''} | {c.dim} | "
                     f"{'—' if c.sigma is None else c.sigma} | {c.budget} | " +
                     " | ".join(fmt(r[n]) for n in (*FIXED, "auto")) + f" | {best} | {ratio:.3f} |")
    update_section("auto-vs-fixed", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=1000)
    ap.add_argument("--part", default="variance,bias,auto")
    ap.add_argument("--dims", default="10,40", help="dimensions of the Auto suite")
    args = ap.parse_args()
    parts = args.part.split(",")
    if "variance" in parts:
        variance_part(args.repeats)
    if "bias" in parts:
        bias_part(args.repeats * 20)
    if "auto" in parts:
        auto_part(args.repeats, tuple(int(d) for d in args.dims.split(",")))


if __name__ == "__main__":
    main()
