"""``stochgrad rl``: ``train``, ``eval`` and ``variance`` (gymnasium, mujoco and ray are imported only when a
command runs)."""

from __future__ import annotations

import argparse

from stochgrad.extras import needs_extras


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``rl`` with ``train``, ``eval`` and ``variance`` to the ``stochgrad`` command."""
    rl = sub.add_parser("rl", help="episodic RL: linear policies on Gymnasium/MuJoCo by parameter-space search",
                        description="Linear policies a = W·normalise(s) trained by parameter-space search with any "
                                    "estimator of the library (and ARS V2-t), rollouts on processes or Ray.")
    rsub = rl.add_subparsers(dest="rl_command", metavar="RL_COMMAND")
    rsub.required = True
    _add_train(rsub)
    _add_eval(rsub)
    _add_variance(rsub)


def _add_train(rsub: argparse._SubParsersAction) -> None:
    from stochgrad.rl.run import RL_TRAIN
    from stochgrad.runs.options import add_run_options

    p = rsub.add_parser(
        "train", formatter_class=argparse.RawDescriptionHelpFormatter, help="train a linear policy",
        description=(
            "Train a linear policy by search gradients over N(W, sigma^2 I). Writes a run directory: config.json,\n"
            "metrics.jsonl (one line per iteration of any seed: seed, mean/max return, episodes and steps so far,\n"
            "evaluation return of the mean policy), checkpoint.pt, plots/reward_curve.png (mean and spread over\n"
            "seeds), summary.md. --resume continues from the checkpoint. Defaults for sigma, the step size,\n"
            "episodes per iteration and the reward shift come from ARS V2-t's published settings for the MuJoCo\n"
            "tasks (at least 6 episodes per iteration).\n\n"
            "estimators: ars (the default: top-b directions, drawn orthogonal unless --directions independent;\n"
            "ARS V2-t is --directions independent --min-episodes-per-iter 1), sf-antithetic, mvd, ccmvd, ccsf, auto,\n"
            "and the other registered black-box estimators"),
        epilog="example: stochgrad rl train --env Hopper-v5 --estimator ccmvd --seeds 5 --episodes 20000 "
               "--out runs/hopper-ccmvd")
    add_run_options(p, RL_TRAIN, "runs/rl-ENV-ESTIMATOR")
    p.set_defaults(run=_run_train)
    needs_extras(p, "rl")


def _run_train(args: argparse.Namespace) -> int:
    from stochgrad.rl.run import RL_TRAIN, first_reaching, run_train
    from stochgrad.rl.tasks import preset
    from stochgrad.runs.options import config_for

    if args.out == "runs/rl-ENV-ESTIMATOR":
        args.out = f"runs/rl-{getattr(args, 'env', 'Hopper-v5')}-{getattr(args, 'estimator', 'ccmvd')}"
    # a budget of steps alone replaces the default budget of episodes
    defaults = {"episodes": None} if hasattr(args, "steps") and not hasattr(args, "episodes") else {}
    config = config_for(RL_TRAIN, args, **defaults)
    results, run_dir = run_train(config, args.out, resume=args.resume, progress=not args.no_progress)
    p = preset(config.env)
    for r in results:
        last = r.rows[-1] if r.rows else {"episodes": 0, "steps": 0}
        msg = (f"seed {r.seed}: {last['episodes']} episodes, {last['steps']} steps, final evaluation return "
               f"{'-' if r.final_eval is None else f'{r.final_eval:.1f}'}")
        if p:
            hit = first_reaching(r.rows, p.threshold)
            msg += f"; threshold {p.threshold:g} " + ("not reached" if hit is None else f"reached after {hit} episodes")
        print(msg)
    print(f"run directory: {run_dir}")
    print(f"plot:          {run_dir / 'plots' / 'reward_curve.png'}")
    return 0


def _add_eval(rsub: argparse._SubParsersAction) -> None:
    p = rsub.add_parser("eval", help="replay the saved policy of a run and report its return",
                        description="Replay the mean policy saved in each seed's checkpoint of RUN (with its saved "
                                    "observation normaliser) and report the return, never shifted.")
    p.add_argument("run_dir", metavar="RUN", help="run directory of stochgrad rl train")
    p.add_argument("--episodes", type=int, default=10, help="episodes per seed (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the replay episodes (default: 0)")
    p.add_argument("--evaluator", default="serial", choices=["process", "ray", "serial"],
                   help="where the replays run (default: this process)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(run=_run_eval)
    needs_extras(p, "rl")


def _run_eval(args: argparse.Namespace) -> int:
    from stochgrad.evaluators import make_evaluator
    from stochgrad.rl.run import run_eval

    ev = make_evaluator(args.evaluator, args.workers)
    try:
        res = run_eval(args.run_dir, episodes=args.episodes, seed=args.seed, evaluator=ev)
    finally:
        ev.close()
    for s, (m, sd) in res.items():
        print(f"seed {s}: return {m:.1f} ± {sd:.1f} over {args.episodes} episodes")
    if len(res) > 1:
        means = [m for m, _ in res.values()]
        print(f"mean over {len(res)} seeds: {sum(means) / len(means):.1f}")
    return 0


def _add_variance(rsub: argparse._SubParsersAction) -> None:
    from stochgrad.rl.variance import RL_VARIANCE
    from stochgrad.runs.options import add_run_options

    p = rsub.add_parser(
        "variance", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="variance reduction of CCMVD and CCSF against the score function at a fixed policy",
        description=(
            "The thesis's experiment: at a fixed policy (W = 0, or the saved policy of --policy RUN), estimate the\n"
            "gradient many times with CCMVD(N, M, K), CCSF(N, M, K) and an antithetic score function with the same\n"
            "budget 2(N + M*K) episodes, and report 1 - Var(X)/Var(SF) on the chosen components for every\n"
            "combination of the given N, M and K. Writes a run directory: config.json, metrics.jsonl (one line\n"
            "per environment and (N, M, K)), checkpoint.pt, variance.json, plots/variance_<env>.png, summary.md."),
        epilog="example: stochgrad rl variance --env Hopper-v5,Swimmer-v5 --n 4,8 --m 1 --k 2,4 --out runs/var")
    add_run_options(p, RL_VARIANCE, "runs/rl-variance")
    p.set_defaults(run=_run_variance)
    needs_extras(p, "rl")


def _run_variance(args: argparse.Namespace) -> int:
    from stochgrad.rl.variance import RL_VARIANCE, format_table, run_variance
    from stochgrad.runs.options import config_for

    records, out = run_variance(config_for(RL_VARIANCE, args), args.out, resume=args.resume,
                                progress=not args.no_progress)
    print(format_table(records))
    print(f"run directory: {out}")
    return 0
