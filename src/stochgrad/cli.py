"""The ``stochgrad`` command line: ``compare`` (the gradient-quality lab) and the applications."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stochgrad import __version__
from stochgrad.errors import MissingExtraError, StochgradError
from stochgrad.extras import extra_providing, install_hint, require


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from stochgrad.estimators.registry import estimator_names, get_spec
    from stochgrad.lab.compare import COMPARE
    from stochgrad.lab.functions import FUNCTIONS
    from stochgrad.runs.options import add_run_options

    p = sub.add_parser(
        "compare", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="measure gradient estimators side by side on test functions with exact gradients",
        description=(
            "Measure gradient estimators at equal evaluations of f on test functions whose smoothed gradient is\n"
            "known exactly. For every function x dim x budget x estimator, repeat the estimate --repeats times\n"
            "at a fixed point and record relative MSE, bias (with its standard error), variance and cosine\n"
            "similarity. Prints a table and writes a run directory: config.json, metrics.jsonl (one record per\n"
            "measurement), records.csv, plots/ (2-D arrows, relative MSE and cosine against evaluations, log-log,\n"
            "one panel per dim) and summary.md. --resume continues an interrupted sweep.\n\n"
            "functions:  " + ", ".join(FUNCTIONS) + "\n"
            "estimators:\n" + "\n".join(f"  {n:<18} {get_spec(n).description}" for n in estimator_names())),
        epilog="example: stochgrad compare --function rosenbrock --dim 10 --estimators sf-loo,mvd,pathwise "
               "--budgets 20,40,80 --repeats 200 --out runs/rosen10")
    add_run_options(p, COMPARE, "runs/compare")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from stochgrad.lab.compare import COMPARE, format_table, run_compare
    from stochgrad.runs.options import config_for

    config = config_for(COMPARE, args)
    records, run_dir = run_compare(config, args.out, resume=args.resume, progress=not args.no_progress)
    print()
    print("relative MSE ||g_hat - g||^2 / ||g||^2 at equal evaluations (* = best in row)")
    print(format_table(records))
    print()
    print(f"run directory: {run_dir}")
    print(f"plots:         {run_dir / 'plots'}")
    print(f"summary:       {run_dir / 'summary.md'}")
    return 0


def _add_optimize(sub: argparse._SubParsersAction) -> None:
    from stochgrad.optim.run import OPTIMIZE
    from stochgrad.runs.options import add_run_options

    p = sub.add_parser(
        "optimize", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="minimise a test function with search gradients (any estimator)",
        description=(
            "Minimise a test function with a search-gradient optimiser: a Normal search distribution N(loc,\n"
            "sigma^2) whose loc follows the estimated gradient of E f through a torch optimiser. Writes a run\n"
            "directory: config.json, metrics.jsonl (one line per step), checkpoint.pt, plots/convergence.png,\n"
            "summary.md. --resume continues an interrupted run from its last checkpoint."),
        epilog="example: stochgrad optimize --function rastrigin --dim 100 --estimator auto --budget 200000 "
               "--out runs/rast100")
    add_run_options(p, OPTIMIZE, "runs/optimize")
    p.set_defaults(run=_run_optimize)


def _run_optimize(args: argparse.Namespace) -> int:
    from stochgrad.optim.run import OPTIMIZE, run_optimize
    from stochgrad.runs.options import config_for

    config = config_for(OPTIMIZE, args)
    result, run_dir = run_optimize(config, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"best f {result.fun:.6g} after {result.n_evals} evaluations ({result.n_steps} steps, stopped by "
          f"{result.stop})")
    print(f"run directory: {run_dir}")
    print(f"plot:          {run_dir / 'plots' / 'convergence.png'}")
    return 0


def _add_applications(sub: argparse._SubParsersAction) -> None:
    """``rl`` and ``rlhf``: their parsers are always listed; each command declares the extras it needs, which
    :func:`main` checks before running it (their heavy modules are imported only when a command runs)."""
    from stochgrad.rl.cli import add_parser as add_rl
    from stochgrad.rlhf.cli import add_parser as add_rlhf

    add_rl(sub)
    add_rlhf(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stochgrad", description="Gradients of expectations of black-box functions: estimators, the "
                                      "gradient-quality lab, and the applications built on them.")
    parser.add_argument("--version", action="version", version=f"stochgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_compare(sub)
    _add_optimize(sub)
    _add_applications(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = getattr(args, "prog", f"stochgrad {args.command}")
    try:
        for extra in getattr(args, "extras", ()):
            require(extra, name)
        return args.run(args)
    except MissingExtraError as exc:
        print(exc, file=sys.stderr)
        return 2
    except StochgradError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = extra_providing(exc.name or "")
        if extra is None:
            raise
        print(f"{name} needs the '{extra}' extra (missing module {exc.name!r}); install it with: "
              f"{install_hint(extra)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = f"; continue it with: {name} --out {args.out} --resume" if hasattr(args, "resume") else ""
        print(f"\n{name}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
