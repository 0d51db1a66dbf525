"""CCMVD and CCSF against a plain score function at equal evaluations, the bias of batch weights, and Auto
against the best fixed estimator on the lab's suite.

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
from stochgrad.lab.metrics import WARMUP as LAB_WARMUP
from stochgrad.lab.metrics import Problem, measure, quality

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


def auto_part(repeats: int) -> None:
    rows = []
    for fn in FUNCTIONS:
        for dim in (2, 10, 100):
            problem = Problem.default(FUNCTIONS[fn], dim)
            for budget in sorted({max(8, 2 * dim), 4 * dim, 8 * dim, 32 * dim}):
                r = {name: measure(name, problem, budget, repeats, seed=11) for name in ("sf-loo", "mvd", "auto")}
                best_name = min(("sf-loo", "mvd"), key=lambda n: r[n]["rel_mse"])
                ratio = r["auto"]["rel_mse"] / r[best_name]["rel_mse"]
                rows.append((fn, dim, budget, r["sf-loo"], r["mvd"], r["auto"], best_name, ratio))
                print(fn, dim, budget, f"{ratio:.3f}", flush=True)
    ratios = [row[-1] for row in rows]
    misses = [row for row in rows if row[-1] > 1.10]
    lines = [
        "## Auto against the best fixed estimator", "",
        f"Relative MSE at equal evaluations on every function of the lab at D = 2, 10, 100 and budgets 2D (at "
        f"least 8), 4D, 8D, 32D; gradient with respect to μ under N(μ, 0.1²) at the lab's fixed point; {repeats} "
        f"estimates per cell (± one standard error). Auto is measured after {LAB_WARMUP} warm-up estimates at the "
        "same point (its running variances need a history, as in an optimiser). Ratio = Auto / best of "
        "(sf-loo, mvd). Target: never above 1.10, below 1 on average.", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}", "",
        f"Mean ratio {statistics.mean(ratios):.3f}, geometric mean "
        f"{statistics.geometric_mean(ratios):.3f}, worst {max(ratios):.3f}; cells above 1.10: {len(misses)} of "
        f"{len(rows)}.", "",
        "| function | D | evaluations | sf-loo | mvd | auto | ratio |", "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for fn, dim, budget, sf, mvd, auto, best, ratio in rows:
        def cell(x):
            return f"{x['rel_mse']:.4g} ± {x['rel_mse_se']:.1g}"
        lines.append(f"| {fn} | {dim} | {budget} | {cell(sf)} | {cell(mvd)} | {cell(auto)} | {ratio:.3f} |")
    if misses:
        lines += ["", "Misses: " + "; ".join(f"{m[0]} D={m[1]} at {m[2]} ({m[-1]:.3f})" for m in misses)]
    lines += ["", "At a budget of exactly 2D (one MVD pair per component, nothing to allocate) Auto is the MVD "
              "estimator, so the ratio there is 1 up to noise. Above it, Auto gives noisier components more pairs "
              "(the Neyman allocation) and buys the score function only where it pays; the gain is largest where "
              "the components' MVD variances differ most (ellipsoid, Rosenbrock's last coordinate)."]
    update_section("auto-vs-fixed", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=1000)
    ap.add_argument("--part", default="variance,bias,auto")
    args = ap.parse_args()
    parts = args.part.split(",")
    if "variance" in parts:
        variance_part(args.repeats)
    if "bias" in parts:
        bias_part(args.repeats * 20)
    if "auto" in parts:
        auto_part(args.repeats)


if __name__ == "__main__":
    main()
