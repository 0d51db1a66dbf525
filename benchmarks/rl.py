"""RL benchmark: episodes to ARS's reward thresholds on the MuJoCo v5 tasks, rollout speed and scaling, and the
variance-reduction figure. Results land in docs/benchmarks.md (sections rl-thresholds, rl-speed, rl-variance)
and docs/figures/.

    python benchmarks/rl.py thresholds --envs Swimmer-v5,Hopper-v5      # long: run parts in the background
    python benchmarks/rl.py speed
    python benchmarks/rl.py variance
    python benchmarks/rl.py report                                       # tables + curves from what has run

Every training run goes to runs/bench-rl/<env>/<method>/seed_<s>/ (a `stochgrad rl train` run directory) and is
resumed, not repeated, when the script runs again; a run is capped at the episodes in CAPS. All methods use the
task's ARS V2-t settings (σ = ν, plain step α, 2N episodes per iteration where the estimator can work with it,
the survival-bonus shift, running observation normaliser, returns divided by their std); the only difference
is the estimator (ARS: top-b of N antithetic directions, the std of the 2b returns used). `default` is
`stochgrad rl train` with nothing but the task and the budget given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, command, machine, update_section

RUNS = ROOT / "runs" / "bench-rl"
FIGS = ROOT / "docs" / "figures"
ENVS = ["Swimmer-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"]
#: method → the TrainConfig settings it sets (everything else is the trainer's default).
#: The four named methods keep ARS's 2N episodes per iteration (or their estimator's minimum); ARS its independent
#: directions.
METHODS: dict[str, dict] = {
    "ars": {"estimator": "ars", "directions": "independent", "min_episodes_per_iter": 1},
    "sf-antithetic": {"estimator": "sf-antithetic", "min_episodes_per_iter": 1},
    "ccmvd": {"estimator": "ccmvd", "min_episodes_per_iter": 1},
    "auto": {"estimator": "auto", "min_episodes_per_iter": 1},
    "default": {},
}
#: Episodes per run (compute on this machine is 2 shared cores); ARS V2-t's published medians on v1 were
#: 427, 1973, 1707 and 24000.
CAPS = {"Swimmer-v5": 1000, "Hopper-v5": 3000, "HalfCheetah-v5": 2600, "Walker2d-v5": 1600}
#: Bootstrap resamples of the seeds for the interval of the median.
BOOTSTRAP = 10000
#: Training episodes between evaluations of the mean policy (5 episodes each, not counted).
EVAL_SPACING = {"Swimmer-v5": 40, "Hopper-v5": 96, "HalfCheetah-v5": 128, "Walker2d-v5": 160}


def _config(env: str, method: str, seed: int, evaluator: str):
    from stochgrad.rl.envs import env_spec
    from stochgrad.rl.trainer import TrainConfig

    cfg = TrainConfig(env=env, episodes=CAPS[env], seed=seed, seeds=1, evaluator=evaluator, eval_episodes=5,
                      checkpoint_every=5, **METHODS[method])
    B = cfg.resolved(env_spec(env))["episodes_per_iter"]
    cfg.eval_every = max(1, EVAL_SPACING[env] // B)
    return cfg


def thresholds(args: argparse.Namespace) -> None:
    from stochgrad.evaluators import make_evaluator
    from stochgrad.rl.run import run_train

    ev = make_evaluator(args.evaluator, args.workers)
    try:
        for seed in range(args.seeds):
            for env in args.envs:
                for method in args.methods:
                    out = RUNS / env / method / f"seed_{seed}"
                    cfg = _config(env, method, seed, args.evaluator)
                    from stochgrad.runs.files import read_jsonl

                    done = read_jsonl(out / "metrics.jsonl")
                    if done and _complete(done, cfg):
                        continue                     # already run (perhaps under a larger cap)
                    resume = (out / "config.json").exists()
                    t = time.perf_counter()
                    res, _ = run_train(cfg, out, resume=resume, progress=False, evaluator=ev)
                    rows = res[0].rows
                    print(f"{env} {method} seed {seed}: {rows[-1]['episodes']} episodes, final eval "
                          f"{res[0].final_eval}, {time.perf_counter() - t:.0f}s", flush=True)
    finally:
        ev.close()


def _complete(rows: list[dict], cfg) -> bool:
    """Whether a seed's rows spent the cap: the trainer never exceeds it, so the last iteration is the one after
    which another would not fit."""
    from stochgrad.rl.envs import env_spec

    per_iter = cfg.resolved(env_spec(cfg.env))["episodes_per_iter"]
    return bool(rows) and rows[-1]["episodes"] + per_iter > CAPS[cfg.env]


def _load_rows(env: str, method: str) -> list[list[dict]]:
    from stochgrad.runs.files import read_jsonl

    out = []
    for d in sorted((RUNS / env / method).glob("seed_*")):
        rows = read_jsonl(d / "metrics.jsonl")
        # count only the episodes within the cap (a run made under a larger cap is cut back to it)
        rows = [r for r in rows if r["episodes"] <= CAPS[env]]
        if _complete(rows, _config(env, method, int(d.name.split("_")[1]), "serial")):
            out.append(rows)
    return out


def _initial_eval(env: str, seed: int) -> dict:
    """The row at episode 0: the starting policy (W = 0, identity normaliser) evaluated as the trainer evaluates,
    the same for every method of a seed."""
    from stochgrad.evaluators import Serial
    from stochgrad.rl.trainer import Trainer

    ret, std = Trainer(_config(env, "default", seed, "serial"), seed, Serial()).evaluate(iteration=0)
    return {"episodes": 0, "eval_return": ret, "eval_std": std}


def median_interval(hits: list[int | None], cap: int, resamples: int = BOOTSTRAP, seed: int = 0
                    ) -> tuple[float, float, float]:
    """Median episodes to threshold over seeds (a seed that did not reach it counts as infinitely many) and a
    95% bootstrap interval over the seeds (percentiles of resampled medians; inf = beyond the cap)."""
    x = np.array([np.inf if h is None else float(h) for h in hits])
    rng = np.random.default_rng(seed)
    meds = np.median(x[rng.integers(0, len(x), (resamples, len(x)))], axis=1)
    lo, hi = np.quantile(meds, [0.025, 0.975], method="inverted_cdf")
    return float(np.median(x)), float(lo), float(hi)


def _episodes_text(v: float, cap: int) -> str:
    return f"> {cap}" if not np.isfinite(v) else f"{v:.0f}"


def report(args: argparse.Namespace) -> None:
    from stochgrad.rl.plots import reward_curve
    from stochgrad.rl.run import first_reaching
    from stochgrad.rl.tasks import TASKS
    from stochgrad.rl.trainer import TrainConfig

    d = TrainConfig()
    lines = [
        "## RL: episodes to ARS's reward thresholds on the MuJoCo v5 tasks",
        "",
        ("Linear policies a = W·normalise(s) trained by `stochgrad.rl.Trainer` with each estimator on the same v5 "
        "tasks, settings and budgets; only the estimator differs. Shared settings per task are ARS V2-t's published "
        "ones (Mania, Guy, Recht 2018, Table 9): σ = ν, a plain step α on 2σ·ĝ (ARS's update for antithetic pairs), "
        "2N episodes per iteration (or the estimator's minimum if larger: 6 for CCMVD on Swimmer), running observation "
        "normaliser frozen within an iteration, returns divided by their std (ARS: the std of the 2b returns it "
        "uses), survival-bonus shift 1 on Hopper and Walker2d, actions clipped to the action space. "
        "`ars` = ARS V2-t run by our trainer (top b of N independent directions); `sf-antithetic` = the same without "
        "top-b (antithetic score function); `ccmvd` = CCMVD at the same episodes per iteration (half score function, "
        "half coupled MVD on the K components with the largest running score-function variance); `auto` = Auto at "
        "the same episodes per iteration; `default` = `stochgrad rl train` given only the task and the budget "
        f"(today: estimator {d.estimator}, {'orthogonal' if d.orthogonal() else 'independent'} directions, at least "
        f"{d.min_episodes_per_iter} episodes per iteration, the rest as above)."),
        "",
        "Episodes to threshold = training episodes (evaluation episodes not counted) at the first evaluation of the "
        "mean policy (mean of 5 episodes, every "
        + ", ".join(f"{e.split('-')[0]} ≈{EVAL_SPACING[e]}" for e in ENVS)
        + " training episodes) whose return reached the threshold. Runs were capped at "
        + ", ".join(f"{e.split('-')[0]} {CAPS[e]}" for e in ENVS)
        + " episodes (2 shared CPU cores); 'not reached' means not within the cap. Median over seeds, a seed that "
        "did not reach the threshold counting as infinitely many episodes, with a 95% bootstrap interval over the "
        f"seeds ({BOOTSTRAP} resamples; '> cap' = beyond the cap). The published ARS V2-t medians "
        "(gym v1, MuJoCo 1.31) are context only: the v5 tasks differ, and ARS's own saved Hopper policy scores about "
        "1500 on v5.",
        "",
        f"Command: `{command()}` (training runs: `python benchmarks/rl.py thresholds --envs ...`)  ",
        f"Machine: {machine()}",
        "",
        ("| task (threshold) | method | seeds | reached | episodes to threshold per seed | median [95% interval] | "
         "best eval return per seed (episodes) | published ARS V2-t median (v1) |"),
        "|---|---|---:|---:|---|---|---|---:|",
    ]
    loaded = {e: {m: _load_rows(e, m) for m in METHODS} for e in ENVS}
    envs = [e for e in ENVS if any(loaded[e].values())]
    for env in envs:
        p = TASKS[env]
        runs = {}
        start: dict[int, dict] = {}          # the starting policy's row per seed, shared by every method
        for method, seeds in loaded[env].items():
            if not seeds:
                continue
            hits = [first_reaching(rows, p.threshold) for rows in seeds]
            per = ", ".join("not reached" if h is None else str(h) for h in hits)
            med, lo, hi = median_interval(hits, CAPS[env])
            best = []
            for rows in seeds:
                ev = [(r["eval_return"], r["episodes"]) for r in rows if r.get("eval_return") is not None]
                b = max(ev) if ev else (float("nan"), 0)
                best.append(f"{b[0]:.0f} ({b[1]}/{rows[-1]['episodes']})")
            reached = sum(h is not None for h in hits)
            lines.append(f"| {env} ({p.threshold:g}) | {method} | {len(seeds)} | {reached}/{len(seeds)} | {per} | "
                         f"{_episodes_text(med, CAPS[env])} [{_episodes_text(lo, CAPS[env])}, "
                         f"{_episodes_text(hi, CAPS[env])}] | {'; '.join(best)} | {p.published_median_episodes} |")
            for rows in seeds:
                seed = int(rows[0]["seed"])
                if seed not in start:
                    start[seed] = _initial_eval(env, seed)
            runs[method] = [[start[int(r[0]["seed"])]] + r for r in seeds]
        FIGS.mkdir(parents=True, exist_ok=True)
        reward_curve(runs, FIGS / f"rl_curve_{env}.png", f"{env}: mean policy return (mean, min–max over seeds)",
                     p.threshold)
    lines += ["", "Reward curves: " + ", ".join(f"`docs/figures/rl_curve_{e}.png`" for e in envs), ""]
    update_section("rl-thresholds", "\n".join(lines))
    print("\n".join(lines))


def _fixed_policy(env: str, seed: int = 0) -> np.ndarray:
    from stochgrad.rl.envs import env_spec

    spec = env_spec(env)
    return np.random.default_rng(seed).normal(0, 0.1, spec.n_params)


def _episodes(env: str, n: int) -> list:
    from stochgrad.rl.envs import env_spec
    from stochgrad.rl.rollout import Episode

    spec = env_spec(env)
    w = _fixed_policy(env)
    return [Episode(env, w, np.zeros(spec.obs_dim), np.ones(spec.obs_dim), np.array(spec.low), np.array(spec.high),
                    1000 + i, spec.max_episode_steps) for i in range(n)]


def _raw_loop(env_id: str, n: int) -> tuple[int, float]:
    """Step the environment with the fixed policy alone (no normaliser, no bookkeeping)."""
    import gymnasium as gym

    env = gym.make(env_id, disable_env_checker=True)
    spec_w = _fixed_policy(env_id)
    W = spec_w.reshape(env.action_space.shape[0], env.observation_space.shape[0])
    lo, hi = env.action_space.low, env.action_space.high
    steps, t = 0, time.perf_counter()
    for i in range(n):
        obs, _ = env.reset(seed=1000 + i)
        while True:
            obs, _, term, trunc, _ = env.step(np.clip(W @ obs, lo, hi))
            steps += 1
            if term or trunc:
                break
    return steps, time.perf_counter() - t


def speed(args: argparse.Namespace) -> None:
    from stochgrad.evaluators import ProcessPool, Ray, Serial
    from stochgrad.rl.rollout import run_episode

    rows = []
    for env in args.envs:
        n = args.episodes
        steps, dt = _raw_loop(env, n)
        rows.append((env, "env + fixed policy alone (1 process)", 1, steps, dt))
        eps = _episodes(env, n)
        ser = Serial()
        ser.map(run_episode, eps[:2])                       # environment made once, as in a worker
        t = time.perf_counter()
        res = ser.map(run_episode, eps)
        rows.append((env, "stochgrad rollout, Serial (1 process)", 1, sum(r.length for r in res),
                     time.perf_counter() - t))
        for w in (1, 2):
            with ProcessPool(workers=w) as pool:
                pool.map(run_episode, _episodes(env, 2 * w))   # start the workers and make their environments
                t = time.perf_counter()
                res = pool.map(run_episode, eps)
                rows.append((env, f"stochgrad rollout, ProcessPool({w})", w, sum(r.length for r in res),
                             time.perf_counter() - t))
        if not args.no_ray:
            with Ray(num_cpus=2) as ray_ev:
                ray_ev.map(run_episode, _episodes(env, 8))
                t = time.perf_counter()
                res = ray_ev.map(run_episode, eps)
                rows.append((env, "stochgrad rollout, Ray local cluster (2 CPUs)", 2, sum(r.length for r in res),
                             time.perf_counter() - t))
    lines = [
        "## RL: environment steps per second, and scaling from 1 to 2 workers",
        "",
        (f"{args.episodes} episodes of a fixed linear policy (W ~ N(0, 0.1²), seeded) per row, the same episodes in "
        "every row. The first row steps the Gymnasium environment with the policy alone; the others run "
        "`stochgrad.rl.rollout.run_episode` (normaliser, NaN checks, state statistics) through an evaluator. "
        "Compare rows of one task as ratios; the machine's load at the time is in the reading below."),
        "",
        f"Command: `{command()}`  ",
        f"Machine: {machine()}",
        "",
        "| task | how | workers | env steps | seconds | steps/s | steps/s per worker | vs env alone (per core) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {}
    for env, how, w, steps, dt in rows:
        sps = steps / dt
        if how.startswith("env"):
            base[env] = sps
        lines.append(f"| {env} | {how} | {w} | {steps} | {dt:.2f} | {sps:,.0f} | {sps / w:,.0f} | "
                     f"{sps / w / base[env]:.2f} |")
    for env in args.envs:
        one = next(s / d for e, h, w, s, d in rows if e == env and h.endswith("ProcessPool(1)"))
        two = next(s / d for e, h, w, s, d in rows if e == env and h.endswith("ProcessPool(2)"))
        lines.append("")
        lines.append(f"{env}: ProcessPool 1 → 2 workers: ×{two / one:.2f} throughput.")
    update_section("rl-speed", "\n".join(lines))
    print("\n".join(lines))


def variance(args: argparse.Namespace) -> None:
    from stochgrad.rl.plots import variance_bars
    from stochgrad.rl.variance import VarianceConfig, format_table, run_variance

    for env in args.envs:
        out = RUNS / "variance" / env
        if (out / "summary.md").exists():
            continue                                    # measured already
        cfg = VarianceConfig(envs=[env], n=[4, 8], m=[1], k=[2, 4], repeats=args.repeats, warmup=5,
                             max_episode_steps=args.horizon, evaluator=args.evaluator, workers=args.workers)
        run_variance(cfg, out, resume=(out / "config.json").exists(), progress=False)   # an interrupted one goes on
    records = []
    for env in ENVS:
        path = RUNS / "variance" / env / "variance.json"
        if (RUNS / "variance" / env / "summary.md").exists():
            records += json.loads(path.read_text())
    FIGS.mkdir(parents=True, exist_ok=True)
    envs = sorted({r["env"] for r in records}, key=ENVS.index)
    for env in envs:
        variance_bars([r for r in records if r["env"] == env], FIGS / f"rl_variance_{env}.png",
                      f"{env}: 1 − Var/Var(SF) on the chosen components")
    reps = sorted({r["repeats"] for r in records})
    horizons = sorted({r["horizon"] for r in records})
    lines = [
        "## RL: variance reduction of CCMVD and CCSF against the score function (the thesis's experiment)",
        "",
        (f"At the fixed policy W = 0 (where training starts; identity normaliser), σ = ARS's ν for the task, episodes "
        f"cut at {', '.join(map(str, horizons))} steps to fit the compute, the task's reward shift. For each (N, M, K): "
        f"{', '.join(map(str, reps))} estimates each of the antithetic score function with 2(N + M·K) episodes, "
        "CCMVD(N, M, K) and CCSF(N, M, K) (after 5 warm-up estimates that only fill the hybrids' running "
        "statistics). With C_r the K components a hybrid X chose in estimate r and ḡ the mean of all estimates (all "
        "three estimators are unbiased), reduction = 1 − Σ_r Σ_{j∈C_r} (X_rj − ḡ_j)² / Σ_r Σ_{j∈C_r} Var(SF_j); "
        "± a bootstrap standard error over the estimates. Positive = less variance than the score function with the "
        "same episodes on the components where the hybrid spent its second budget. CCSF is the control: combining "
        "two score functions can at best match one with their joint budget, so its reduction should be near 0 or "
        "below."),
        "",
        (f"Command: `python benchmarks/rl.py variance --envs {','.join(envs)} --repeats {args.repeats} "
        f"--horizon {args.horizon}` (one process per task)  "),
        f"Machine: {machine()}",
        "",
        format_table(records),
        "",
        "Figures: " + ", ".join(f"`docs/figures/rl_variance_{e}.png`" for e in envs),
    ]
    update_section("rl-variance", "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("thresholds")
    t.add_argument("--envs", default=",".join(ENVS))
    t.add_argument("--methods", default=",".join(METHODS))
    t.add_argument("--seeds", type=int, default=3)
    t.add_argument("--evaluator", default="serial", choices=["serial", "process", "ray"])
    t.add_argument("--workers", type=int, default=None)
    t.set_defaults(run=thresholds)
    r = sub.add_parser("report")
    r.set_defaults(run=report)
    s = sub.add_parser("speed")
    s.add_argument("--envs", default="Hopper-v5,HalfCheetah-v5")
    s.add_argument("--episodes", type=int, default=20)
    s.add_argument("--no-ray", action="store_true")
    s.set_defaults(run=speed)
    v = sub.add_parser("variance")
    v.add_argument("--envs", default=",".join(ENVS))
    v.add_argument("--repeats", type=int, default=30)
    v.add_argument("--horizon", type=int, default=200)
    v.add_argument("--evaluator", default="serial", choices=["serial", "process", "ray"])
    v.add_argument("--workers", type=int, default=None)
    v.set_defaults(run=variance)
    args = parser.parse_args()
    for name in ("envs", "methods"):
        if isinstance(getattr(args, name, None), str):
            setattr(args, name, [x for x in getattr(args, name).split(",") if x])
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    args.run(args)


if __name__ == "__main__":
    main()
