"""Why the quasi-Newton search's defaults are what they are: one option varied at a time on bbob functions
(evaluations to Δf = 1e-8, COCO's initial solution, σ0 = 2), and the noisy objectives where finite differences
are fragile, side by side with SNES-style natural steps. Needs `pip install coco-experiment`.

    python benchmarks/quasi_newton_ablation.py bbob --option memory --values 10,100,1000 --dims 10,40
    python benchmarks/quasi_newton_ablation.py bbob --option differences --values central,forward,adaptive
    python benchmarks/quasi_newton_ablation.py noisy
    python benchmarks/quasi_newton_ablation.py lab

Each invocation writes its own section of docs/benchmarks.md ("quasi-newton-<option>" or "quasi-newton-noisy";
`--no-write` prints only).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command, machine, update_section

from stochgrad.lab.functions import FUNCTIONS
from stochgrad.optim import QuasiNewtonSearch, minimize

T = torch.float64


def parse_value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def bbob_run(fid: int, dim: int, instance: int, budget: int, options: dict) -> tuple[int, bool]:
    import cocoex

    suite = cocoex.Suite("bbob", "", f"dimensions:{dim} instance_indices:{instance} function_indices:{fid}")
    p = next(iter(suite))
    opt = QuasiNewtonSearch(torch.tensor(p.initial_solution, dtype=T), 2.0, seed=instance, **options)
    while p.evaluations + opt.next_evals() <= budget and not p.final_target_hit:
        x = opt.ask()
        opt.tell(torch.tensor([p(xi) for xi in x.numpy()], dtype=T))
    return int(p.evaluations), bool(p.final_target_hit)


def bbob(args: argparse.Namespace) -> list[str]:
    values = [parse_value(v) for v in args.values.split(",")]
    fids = [int(f) for f in args.functions.split(",")]
    insts = [int(i) for i in args.instances.split(",")]
    lines = ["", "", f"`{command()}`", "",
             (f"aRT to Δf = 1e-8 (evaluations summed over instances {','.join(map(str, insts))} / runs solved; "
             f"unsolved runs count their evaluations) and runs solved, {args.budget_per_dim}·D evaluations per run; "
             f"every other option at its default."), "",
             "| D | f | " + " | ".join(f"{args.option}={v}" for v in values) + " |",
             "|---:|---:|" + "---:|" * len(values)]
    totals = {v: 0 for v in values}
    for dim in [int(d) for d in args.dims.split(",")]:
        for fid in fids:
            cells = []
            for v in values:
                runs = [bbob_run(fid, dim, i, args.budget_per_dim * dim, {args.option: v}) for i in insts]
                solved = sum(s for _, s in runs)
                totals[v] += solved
                art = sum(e for e, _ in runs) / solved if solved else math.inf
                cells.append(f"{art:.0f} ({solved}/{len(runs)})" if solved else f"∞ (0/{len(runs)})")
            lines.append(f"| {dim} | f{fid} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines += ["", "Runs solved in all: " + ", ".join(f"{args.option}={v}: {n}" for v, n in totals.items()) + ".", ""]
    return lines


def noisy(args: argparse.Namespace) -> list[str]:
    """True f at the returned point for noisy sphere and Rosenbrock, D = 10, 20 000 evaluations, 4 seeds."""
    cases = {"sphere + N(0, 0.01²)": ("sphere", "add"), "sphere · (1 + N(0, 0.01²))": ("sphere", "mul"),
             "rosenbrock + N(0, 0.01²)": ("rosenbrock", "add")}
    methods = {"natural (SNES)": {"estimator": "sf-antithetic"}, "quasi-newton": {"optimizer": "quasi-newton"},
               "staged (default)": {}}
    lines = ["", "", f"`{command()}`", "",
             ("True (noise-free) f at the point `minimize` returns, D = 10, x0 = 2, σ0 = 1, 20 000 evaluations, "
             "seeds 0–3 (noise seeded per run)."), "",
             "| f | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for label, (name, kind) in cases.items():
        clean = FUNCTIONS[name]
        cells = []
        for options in methods.values():
            vals = []
            for seed in range(4):
                gen = torch.Generator().manual_seed(100 + seed)

                def f(x, clean=clean, gen=gen, kind=kind):
                    e = 0.01 * torch.randn(x.shape[0], generator=gen, dtype=x.dtype)
                    return clean(x) + e if kind == "add" else clean(x) * (1 + e)

                res = minimize(f, torch.full((10,), 2.0, dtype=T), 1.0, budget=20_000, seed=seed, **options)
                vals.append(float(clean(res.x[None])[0]))
            cells.append(", ".join(f"{v:.2g}" for v in vals))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return [*lines, ""]


def lab(args: argparse.Namespace) -> list[str]:
    """Best f of natural steps (SNES) and the staged default on the lab's functions, D = 10, 3 seeds."""
    from stochgrad.optim.objective import resolve_objective

    methods = {"natural (SNES)": {"estimator": "sf-antithetic"}, "staged (default)": {}}
    lines = ["", "", f"`{command()}`", "",
             ("Best f found on the lab's functions, D = 10, x0 = a quarter of the domain's half-width, σ0 = a tenth "
              "of it, 20 000 evaluations, seeds 0–2."), "",
             "| function (minimum) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name in FUNCTIONS:
        obj = resolve_objective(name, 10, False)
        x0 = torch.full((10,), 0.25 * obj.domain, dtype=T)
        cells = [", ".join(f"{minimize(obj.f, x0, 0.1 * obj.domain, budget=20_000, seed=seed, **o).fun:.3g}"
                           for seed in range(3)) for o in methods.values()]
        lines.append(f"| {name} ({obj.minimum:.6g}) | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("bbob", "noisy", "lab"))
    ap.add_argument("--option", default="memory", help="a QuasiNewtonSearch option")
    ap.add_argument("--values", default="10,100,1000")
    ap.add_argument("--dims", default="10")
    ap.add_argument("--functions", default="1,2,5,6,8,9,10,11,12,13,14")
    ap.add_argument("--instances", default="1,2,3")
    ap.add_argument("--budget-per-dim", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = {"bbob": bbob, "noisy": noisy, "lab": lab}[args.part](args)
    if not args.no_write:
        title = {"bbob": f"## The quasi-Newton search's `{args.option}`",
                 "noisy": "## The quasi-Newton and staged searches on noisy objectives",
                 "lab": "## The staged search against natural steps on the lab's functions"}[args.part]
        name = f"quasi-newton-{args.option}" if args.part == "bbob" else f"quasi-newton-{args.part}"
        update_section(name, "\n".join([title, "", f"Machine: {machine()}.", "", *lines[2:]]))


if __name__ == "__main__":
    main()
