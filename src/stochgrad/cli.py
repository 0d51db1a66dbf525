"""The ``stochgrad`` command line: ``compare`` (the gradient-quality lab) and the applications."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stochgrad import __version__
from stochgrad.errors import MissingExtraError, StochgradError
from stochgrad.extras import extra_providing, install_hint, require


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
    p.add_argument("--estimators", type=_csv, default=["sf-loo", "sf-antithetic", "mvd", "auto", "pathwise"],
                   help="estimators by name, comma-separated (default: sf-loo,sf-antithetic,mvd,auto,pathwise)")
    p.add_argument("--budgets", type=_csv, default=["2D", "4D", "8D", "16D"],
                   help="evaluations of f per estimate, comma-separated: a number (80) or a multiple of the "
                        "dimension (4D = 4 x dim); every estimator gets the same budget (default: 2D,4D,8D,16D)")
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


def _add_optimize(sub: argparse._SubParsersAction) -> None:
    from stochgrad.estimators.registry import estimator_names
    from stochgrad.lab.functions import FUNCTIONS
    from stochgrad.optim.search import OPTIMIZERS

    p = sub.add_parser(
        "optimize", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="minimise a test function with search gradients (any estimator)",
        description=(
            "Minimise a test function with a search-gradient optimiser: a Normal search distribution N(loc,\n"
            "sigma^2) whose loc follows the estimated gradient of E f through a torch optimiser. Writes a run\n"
            "directory: config.json, history.jsonl (one line per step), checkpoint.pt, plots/convergence.png,\n"
            "summary.md. --resume continues an interrupted run from its last checkpoint.\n\n"
            "functions:  " + ", ".join(FUNCTIONS) + "\nestimators: " + ", ".join(estimator_names())),
        epilog="example: stochgrad optimize --function rastrigin --dim 100 --estimator auto --budget 200000 "
               "--out runs/rast100")
    p.add_argument("--function", default="rastrigin", help="test function (default: rastrigin)")
    p.add_argument("--dim", type=int, default=10, help="dimension D (default: 10)")
    p.add_argument("--estimator", default="auto", help="gradient estimator by name (default: auto)")
    p.add_argument("--budget", type=int, default=20000, help="evaluations of f in total (default: 20000)")
    p.add_argument("--popsize", type=int, default=None,
                   help="evaluations per step (default: 2*D, at least 8)")
    p.add_argument("--sigma0", type=float, default=None,
                   help="initial search scale (default: 0.1 x the function's domain half-width)")
    p.add_argument("--x0", type=float, default=None,
                   help="initial value of every coordinate (default: a quarter of the domain half-width)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: sigma0)")
    p.add_argument("--optimizer", default="adam", choices=[*OPTIMIZERS, "natural"],
                   help="update rule: a torch optimiser (adam, sgd) or natural-gradient steps that also learn "
                        "sigma, SNES-style (default: adam)")
    p.add_argument("--learn-scale", action="store_true", help="learn log(sigma) from the scale gradient")
    p.add_argument("--sigma-decay", type=float, default=0.995,
                   help="multiply sigma by this after every step when it is not learned (default: 0.995)")
    p.add_argument("--lr-decay", type=float, default=1.0,
                   help="multiply the learning rate by this after every step (default: 1, fixed)")
    p.add_argument("--min-sigma", type=float, default=1e-8, help="lower bound on sigma (default: 1e-8)")
    p.add_argument("--fitness-shaping", default="none", choices=["none", "centered-ranks"],
                   help="replace f by centred ranks within each step (default: none)")
    p.add_argument("--target", type=float, default=None, help="stop once a value <= target is seen")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of every random number (default: 0)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default: 50)")
    p.add_argument("--out", default="runs/optimize", help="run directory (default: runs/optimize)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (its saved settings are used; "
                        "--budget may be raised)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_optimize)


def _run_optimize(args: argparse.Namespace) -> int:
    from stochgrad.optim.run import OptimizeConfig, run_optimize

    config = OptimizeConfig(
        function=args.function, dim=args.dim, estimator=args.estimator, budget=args.budget, popsize=args.popsize,
        sigma0=args.sigma0, x0=args.x0, lr=args.lr, optimizer=args.optimizer, learn_scale=args.learn_scale,
        sigma_decay=args.sigma_decay, lr_decay=args.lr_decay, min_sigma=args.min_sigma, fitness_shaping=args.fitness_shaping,
        target=args.target, time_limit=args.time_limit, seed=args.seed, checkpoint_every=args.checkpoint_every)
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
        print(f"\n{name}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
