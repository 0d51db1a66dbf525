"""The ``stochgrad`` command line: ``compare`` (the gradient-quality lab) and the applications."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stochgrad.errors import StochgradError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from stochgrad.estimators.registry import estimator_names, get_spec
    from stochgrad.lab.functions import FUNCTIONS

    p = sub.add_parser(
        "compare", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="measure gradient estimators side by side on test functions with exact gradients",
        description=(
            "Measure gradient estimators at equal evaluations of f on test functions whose smoothed gradient is\n"
            "known exactly. For every function x dim x budget x estimator, repeat the estimate --repeats times\n"
            "at a fixed point and record relative MSE, bias (with its standard error), variance and cosine\n"
            "similarity. Prints a table and writes a run directory: config.json, records.jsonl, records.csv,\n"
            "plots/ (2-D arrows, relative MSE and cosine against evaluations, log-log, one panel per dim) and\n"
            "summary.md. Running again with the same --out resumes where it stopped.\n\n"
            "functions:  " + ", ".join(FUNCTIONS) + "\n"
            "estimators:\n" + "\n".join(f"  {n:<18} {get_spec(n).description}" for n in estimator_names())),
        epilog="example: stochgrad compare --function rosenbrock --dim 10 --estimators sf-loo,mvd,pathwise "
               "--budgets 20,40,80 --repeats 200 --out runs/rosen10")
    p.add_argument("--function", "--functions", dest="functions", type=_csv, default=["rosenbrock"],
                   help="test function(s), comma-separated (default: rosenbrock)")
    p.add_argument("--dim", "--dims", dest="dims", type=_ints, default=[2, 10, 100],
                   help="dimension(s) D, comma-separated; one plot panel per dim (default: 2,10,100)")
    p.add_argument("--estimators", type=_csv, default=["sf-loo", "sf-antithetic", "mvd", "pathwise"],
                   help="estimators by name, comma-separated (default: sf-loo,sf-antithetic,mvd,pathwise)")
    p.add_argument("--budgets", type=_csv, default=["2D", "4D", "8D", "16D", "32D"],
                   help="evaluations of f per estimate, comma-separated: a number (80) or a multiple of the "
                        "dimension (4D = 4 x dim); every estimator gets the same budget (default: 2D,4D,8D,16D,32D)")
    p.add_argument("--repeats", type=int, default=200,
                   help="independent estimates per measurement (default: 200)")
    p.add_argument("--scale", type=float, default=0.1, help="σ of the Normal search distribution (default: 0.1)")
    p.add_argument("--params", type=_csv, default=["loc"],
                   help="parameters whose gradient is estimated: loc, scale or loc,scale (default: loc)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each measurement derives its own (default: 0)")
    p.add_argument("--out", default="runs/compare", help="run directory (default: runs/compare)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from stochgrad.lab.compare import format_table, run_compare
    from stochgrad.lab.sweep import SweepConfig

    config = SweepConfig(functions=args.functions, dims=args.dims, estimators=args.estimators,
                         budgets=args.budgets, repeats=args.repeats, scale=args.scale, params=tuple(args.params),
                         seed=args.seed)
    records, run_dir = run_compare(config, args.out, progress=not args.no_progress)
    print()
    print("relative MSE ||g_hat - g||^2 / ||g||^2 at equal evaluations (* = best in row)")
    print(format_table(records))
    print()
    print(f"run directory: {run_dir}")
    print(f"plots:         {run_dir / 'plots'}")
    print(f"summary:       {run_dir / 'summary.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stochgrad", description="Gradients of expectations of black-box functions: estimators, the "
                                      "gradient-quality lab, and the applications built on them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_compare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except StochgradError as exc:
        print(f"stochgrad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nstochgrad {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
