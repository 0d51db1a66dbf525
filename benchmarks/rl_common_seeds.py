"""Common random numbers in RL: how much of a pair estimator's variance is the start state's.

At a fixed policy (W = 0 with the identity normaliser, or the final policy of an `rl train` run), R independent
estimates of ∇_W E[return] by the antithetic score function (N pairs W ± σδ, ARS's b = N), each with one reset
seed per episode (`rl train`'s default) and with one reset seed per estimate (`--common-seeds`). Reported per (task, policy, N): the relative variance E‖ĝ − ḡ‖²/‖ḡ‖² of each (ḡ = the mean
of every estimate of both kinds, all unbiased for the same gradient), and their ratio. Writes the section
rl-common-seeds of docs/benchmarks.md.

    python benchmarks/rl_common_seeds.py --envs Hopper-v5,HalfCheetah-v5 --repeats 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command, machine, update_section


def estimates(env: str, policy: tuple, n_pairs: int, repeats: int, common: bool, horizon: int | None,
              evaluator) -> np.ndarray:
    """``[R, D]`` antithetic score-function estimates (``sg.ARS`` with b = N) with per-episode or per-estimate
    reset seeds; estimate r draws its directions from seed r, so both kinds of seeds see the same directions."""
    import stochgrad as sg
    from stochgrad.rl.envs import env_spec
    from stochgrad.rl.rollout import VARIANCE, Episode, iteration_seeds, run_episode
    from stochgrad.rl.tasks import preset

    spec = env_spec(env, horizon)
    p = preset(env)
    sigma, shift = (p.noise, p.shift) if p else (0.05, 0.0)
    w, mean, std = policy
    dist = sg.Normal(torch.as_tensor(w), torch.full((w.size,), sigma, dtype=torch.float64))
    low, high = np.array(spec.low), np.array(spec.high)
    out = []
    for r in range(repeats):
        plan = sg.ARS(n_pairs).plan(dist, torch.Generator().manual_seed(r))
        seeds = iteration_seeds(0, r, 2 * n_pairs, VARIANCE, common=common)
        eps = [Episode(env, pt.numpy(), mean, std, low, high, s, spec.max_episode_steps, shift, "clip", False)
               for pt, s in zip(plan.points, seeds)]
        ret = torch.tensor([x.shifted_return for x in evaluator.map(run_episode, eps)], dtype=torch.float64)
        out.append(plan.combine(ret).grad["loc"].numpy())
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="Hopper-v5,HalfCheetah-v5")
    parser.add_argument("--policies", default="", help="env=run_dir,... : trained policies measured besides W = 0")
    parser.add_argument("--pairs", default="8,32")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--horizon", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    from stochgrad.evaluators import make_evaluator
    from stochgrad.rl.envs import env_spec
    from stochgrad.rl.variance import fixed_policy

    trained = dict(x.split("=", 1) for x in args.policies.split(",") if x)
    rows = []
    ev = make_evaluator("process", args.workers)
    try:
        for env in [e for e in args.envs.split(",") if e]:
            spec = env_spec(env, args.horizon)
            for label, run in [("W = 0", None)] + ([("trained", trained[env])] if env in trained else []):
                policy = fixed_policy(env, run, spec.obs_dim, spec.n_params)
                for n in [int(x) for x in args.pairs.split(",")]:
                    own = estimates(env, policy, n, args.repeats, False, args.horizon, ev)
                    common = estimates(env, policy, n, args.repeats, True, args.horizon, ev)
                    center = np.concatenate([own, common]).mean(0)
                    norm2 = float(center @ center)
                    rel = [float(((g - center) ** 2).sum(1).mean()) / norm2 for g in (own, common)]
                    cos = [float(np.mean(g @ center / (np.linalg.norm(g, axis=1) * np.sqrt(norm2))))
                           for g in (own, common)]
                    rows.append((env, label, n, rel[0], rel[1], cos[0], cos[1]))
                    print(rows[-1], flush=True)
    finally:
        ev.close()
    lines = [
        "## RL: common random numbers (one reset seed per estimate) against one seed per episode",
        "",
        (f"At a fixed policy, {args.repeats} independent estimates of ∇_W E[return] per row by the antithetic score "
         "function with N pairs W ± σδ (σ = ARS's ν, the task's reward shift, the same directions in both columns), "
         "each pair's episodes reset with their own seeds (`rl train`'s default) or every episode of an estimate "
         "with the same seed (`--common-seeds`). Relative variance = mean ‖ĝ − ḡ‖²/‖ḡ‖² with ḡ the mean of all "
         "estimates of both columns (both are unbiased for the same gradient); cosine = mean cos(ĝ, ḡ). "
         f"Horizon: {args.horizon or 'the task’s (1000)'}. 'trained' = the final policy of the named run."),
        "",
        f"Command: `{command()}`  ",
        f"Machine: {machine()}",
        "",
        ("| task | policy | N pairs | rel. variance, seed per episode | rel. variance, common seed | ratio | "
         "cosine, per episode | cosine, common |"),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for env, label, n, a, b, ca, cb in rows:
        lines.append(f"| {env} | {label} | {n} | {a:.3g} | {b:.3g} | {b / a:.2f} | {ca:.3f} | {cb:.3f} |")
    if trained:
        lines += ["", "Trained policies: " + ", ".join(f"{e}: `{r}`" for e, r in trained.items())]
    update_section("rl-common-seeds", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
