"""The thesis's variance experiment: at a fixed policy, how much do CCMVD and CCSF reduce the variance of the
gradient on the components they choose, against a score function with the same budget of episodes?

For every (N, M, K): the antithetic score function with 2(N + M·K) episodes (leave-one-pair-out baseline,
which with pairs equals no baseline), CCMVD(N, M, K) and CCSF(N, M, K) (each 2N + 2·M·K episodes) each estimate
∇_W E[return] ``repeats`` times at the same fixed policy, after ``warmup`` estimates that only fill the hybrids'
running statistics (their choice of components and their weights come from earlier estimates only). Every estimator is
unbiased, so the mean ḡ of all their estimates stands in for the true gradient, and with C_r the components a
hybrid X chose in repeat r,

    reduction = 1 − Σ_r Σ_{j∈C_r} (X_rj − ḡ_j)²  /  Σ_r Σ_{j∈C_r} Var(SF_j),

the squared error of X where it spent its second budget against the score function's variance on the same
components (every repeat counts, whatever it chose); its standard error comes from a bootstrap over the repeats.
Positive means X is less noisy where it spends its second budget. Episodes use
the task's reward shift, so f is the objective that training maximises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stochgrad.distributions.normal import Normal
from stochgrad.errors import InvalidArgumentError
from stochgrad.estimators.hybrid import CCMVD, CCSF
from stochgrad.estimators.score_function import ScoreFunction
from stochgrad.rl.envs import env_spec
from stochgrad.rl.normalizer import RunningNormalizer
from stochgrad.evaluators import EVALUATORS, make_evaluator
from stochgrad.rl.plots import variance_bars
from stochgrad.rl.rollout import VARIANCE, Episode, iteration_seeds, run_episode
from stochgrad.rl.tasks import preset
from stochgrad.runs import Command, option, run
from stochgrad.runs.files import atomic_write_text, load_checkpoint


@dataclass
class VarianceConfig:
    """Settings of the experiment (saved as config.json).

    Attributes:
      envs: environment ids; n, m, k: the values of N, M and K (every combination is measured).
      repeats: estimates per estimator and combination; warmup: estimates before measuring.
      sigma: search std (default: ARS's ν for the task, else 0.05).
      max_episode_steps: horizon (default: the environment's).
      policy: a run directory of ``rl train`` whose first seed's policy and normaliser are the fixed policy
        (default: W = 0 with the identity normaliser, where training starts).
      common_seeds: every episode of one estimate starts from the same reset seed (as ``rl train
        --common-seeds``).
      seed, evaluator, workers, ray_address: as for training.
    """

    envs: list[str] = option(["Hopper-v5"], "environment id(s), comma-separated", flags=("--env",))
    n: list[int] = option([4, 8], "N values, comma-separated")
    m: list[int] = option([1], "M values, comma-separated")
    k: list[int] = option([2, 4], "K values, comma-separated")
    repeats: int = option(30, "estimates per estimator and (N,M,K)")
    warmup: int = option(5, "estimates before measuring, so CCMVD/CCSF have running statistics")
    sigma: float | None = option(None, "search std (default: ARS's nu for the task)")
    max_episode_steps: int | None = option(None, "episode horizon (default: the env's)")
    policy: str | None = option(None, "run directory of rl train whose saved policy (seed 0) is the fixed policy")
    common_seeds: bool = option(False, "start every episode of one estimate from the same reset seed")
    seed: int = option(0, "seed")
    evaluator: str = option("process", "where rollouts run", choices=EVALUATORS, resumable=True)
    workers: int | None = option(None, "worker processes (default: all cores)", resumable=True)
    ray_address: str | None = option(None, "join a Ray cluster ('auto'); implies --evaluator ray", resumable=True)

    def combos(self) -> list[tuple[int, int, int]]:
        return [(n, m, k) for n in self.n for m in self.m for k in self.k]

    def validate(self) -> None:
        if not self.envs:
            raise InvalidArgumentError("env: give at least one environment id")
        for name in ("n", "m", "k"):
            vals = getattr(self, name)
            if not vals or any((not isinstance(v, int)) or v < 1 for v in vals):
                raise InvalidArgumentError(f"{name}: need positive integers; got {vals!r}")
        if self.repeats < 3:
            raise InvalidArgumentError(f"repeats: need at least 3 estimates to measure a variance; got {self.repeats}")
        if self.warmup < 0:
            raise InvalidArgumentError(f"warmup: need >= 0; got {self.warmup}")
        if self.sigma is not None and not self.sigma > 0:
            raise InvalidArgumentError(f"sigma: need > 0; got {self.sigma}")
        for n, m, k in self.combos():
            if m * k < 2:
                raise InvalidArgumentError(
                    f"m, k: CCSF's second score function needs M·K >= 2 antithetic pairs; got M={m}, K={k}")


def fixed_policy(env: str, policy: str | Path | None, obs_dim: int, n_params: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W ``[A·S]``, normaliser mean ``[S]``, std ``[S]``) of the policy to measure at: W = 0 with the identity
    normaliser for ``policy=None``, else the first seed's final state in the ``rl train`` run directory ``policy``.

    Raises:
      InvalidArgumentError: ``policy`` holds no checkpoint, or was trained on another environment.
    """
    if policy is None:
        return np.zeros(n_params), np.zeros(obs_dim), np.ones(obs_dim)
    run = Path(policy)
    ckpt = run / "checkpoint.pt"
    if not ckpt.exists():
        raise InvalidArgumentError(f"policy: {str(run)!r} holds no checkpoint of stochgrad rl train")
    state = load_checkpoint(ckpt)["experiment"]["seeds"][0]
    if state["env"] != env:
        raise InvalidArgumentError(f"policy: {str(run)!r} was trained on {state['env']}, not {env}")
    norm = RunningNormalizer(obs_dim)
    norm.load_state_dict(state["normalizer"])
    mean, std = norm.frozen()
    return state["weights"].numpy().reshape(-1).astype(np.float64), mean, std


def relative_reduction(x: np.ndarray, chosen: np.ndarray, sf: np.ndarray, center: np.ndarray, boot: int = 200,
                       rng: np.random.Generator | None = None) -> tuple[float, float]:
    """``1 − Σ_{r, j∈C_r} (x_rj − center_j)² / Σ_{r, j∈C_r} Var(sf_j)`` and its bootstrap standard error.

    Args:
      x: the hybrid's estimates ``[R, D]``; chosen: ``[R, D]`` booleans (C_r); sf: score-function estimates
        ``[R', D]``; center: the pooled mean of every estimate ``[D]`` (the true gradient's stand-in).
    """
    rng = rng or np.random.default_rng(0)

    def stat(xi: np.ndarray, ci: np.ndarray, si: np.ndarray) -> float:
        den = (ci * si.var(0, ddof=1)).sum()
        return 1.0 - float((ci * (xi - center) ** 2).sum() / den) if den > 0 else float("nan")

    value = stat(x, chosen, sf)
    reps = []
    for _ in range(boot):
        a = rng.integers(0, x.shape[0], x.shape[0])
        b = rng.integers(0, sf.shape[0], sf.shape[0])
        v = stat(x[a], chosen[a], sf[b])
        if np.isfinite(v):
            reps.append(v)
    return value, (float(np.std(reps, ddof=1)) if len(reps) > 1 else float("nan"))


class _EnvContext:
    """What measuring on one environment needs: its search distribution at the fixed policy and f."""

    def __init__(self, config: VarianceConfig, env: str, experiment: VarianceExperiment) -> None:
        spec = env_spec(env, config.max_episode_steps)
        p = preset(env)
        self.env, self.spec = env, spec
        self.sigma = config.sigma if config.sigma is not None else (p.noise if p else 0.05)
        shift = p.shift if p else 0.0
        w, mean, std = fixed_policy(env, config.policy, spec.obs_dim, spec.n_params)
        self.dist = Normal(torch.as_tensor(w), torch.full((spec.n_params,), self.sigma, dtype=torch.float64))
        low, high = np.array(spec.low), np.array(spec.high)

        def f(points: torch.Tensor) -> torch.Tensor:
            it = experiment.calls
            experiment.calls += 1
            seeds = iteration_seeds(config.seed, it, len(points), VARIANCE, common=config.common_seeds)
            eps = [Episode(env, pt.numpy(), mean, std, low, high, s, spec.max_episode_steps, shift, "clip", False)
                   for pt, s in zip(points, seeds)]
            res = experiment.evaluator.map(run_episode, eps)
            experiment.episodes += len(eps)
            return torch.tensor([r.shifted_return for r in res], dtype=torch.float64)

        self.f = f


def measure_combo(config: VarianceConfig, ctx: _EnvContext, n: int, m: int, k: int,
                  gen: torch.Generator) -> list[dict]:
    """The records of CCMVD(N, M, K) and CCSF(N, M, K) against the score function on one environment."""
    f, dist, n_params = ctx.f, ctx.dist, ctx.spec.n_params
    budget = 2 * (n + m * k)
    sf = ScoreFunction(budget, baseline="loo", antithetic=True)
    sf_grads = np.stack([sf.estimate(f, dist, gen, ("loc",)).grad["loc"].numpy() for _ in range(config.repeats)])
    runs = {}
    for name, cls in (("ccmvd", CCMVD), ("ccsf", CCSF)):
        est = cls(n_samples=n, samples_per_dim=m, k=k)
        for _ in range(config.warmup):
            est.estimate(f, dist, gen, ("loc",))
        grads, chosen = [], []
        for _ in range(config.repeats):
            g = est.estimate(f, dist, gen, ("loc",))
            grads.append(g.grad["loc"].numpy())
            mask = np.zeros(n_params, dtype=bool)
            mask[g.info["components"]["loc"].numpy().reshape(-1)] = True
            chosen.append(mask)
        runs[name] = (np.stack(grads), np.stack(chosen))
    center = np.concatenate([sf_grads, *[g for g, _ in runs.values()]]).mean(0)
    records = []
    for name, (grads, chosen) in runs.items():
        red, se = relative_reduction(grads, chosen, sf_grads, center)
        records.append({"env": ctx.env, "n": n, "m": m, "k": k, "budget": budget, "estimator": name,
                        "reduction": red, "stderr": se, "components": int(chosen.any(0).sum()),
                        "repeats": config.repeats, "sigma": ctx.sigma, "horizon": ctx.spec.max_episode_steps})
    return records


class VarianceExperiment:
    """``rl variance`` as an :class:`~stochgrad.runs.Experiment`: a step measures one (environment, N, M, K).

    Each environment starts a generator from ``seed`` and numbers its calls of f from 0, so its records do not
    depend on the other environments; the checkpoint holds the generator's state and the call counter.
    """

    unit = "episode"

    def __init__(self, config: VarianceConfig, run_dir: Path | None = None, evaluator: Any = None) -> None:
        self.config = config
        self.items = [(env, combo) for env in config.envs for combo in config.combos()]
        for env in config.envs:                          # every K fits every environment, before any work
            n_params = env_spec(env, config.max_episode_steps).n_params
            for _, _, k in config.combos():
                if k > n_params:
                    raise InvalidArgumentError(f"k: {env} has {n_params} policy parameters; got K={k}")
            fixed_policy(env, config.policy, env_spec(env, config.max_episode_steps).obs_dim, n_params)
        self.own = evaluator is None
        self.evaluator = evaluator if evaluator is not None else make_evaluator(config.evaluator, config.workers,
                                                                                 config.ray_address)
        self.next = self.calls = self.episodes = 0
        self.gen = torch.Generator().manual_seed(config.seed)
        self.ctx: _EnvContext | None = None

    def stop_reason(self) -> str | None:
        return "done" if self.next >= len(self.items) else None

    def step(self) -> dict:
        env, (n, m, k) = self.items[self.next]
        if self.next == 0 or self.items[self.next - 1][0] != env:      # a new environment starts afresh
            self.gen, self.calls = torch.Generator().manual_seed(self.config.seed), 0
        if self.ctx is None or self.ctx.env != env:
            self.ctx = _EnvContext(self.config, env, self)
        records = measure_combo(self.config, self.ctx, n, m, k, self.gen)
        self.next += 1
        return {"env": env, "n": n, "m": m, "k": k, "records": records}

    def progress(self) -> tuple[int, int]:
        c = self.config
        per = sum(2 * (n + m * k) * (c.repeats * 3 + 2 * c.warmup) for n, m, k in c.combos())
        return self.episodes, per * len(c.envs)

    def state_dict(self) -> dict:
        return {"next": self.next, "calls": self.calls, "episodes": self.episodes, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.next, self.calls, self.episodes = int(state["next"]), int(state["calls"]), int(state["episodes"])
        self.gen.set_state(state["gen"])

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        """``variance.json`` (every record), ``plots/variance_<env>.png`` and ``summary.md``."""
        records = records_of(rows)
        atomic_write_text(run_dir / "variance.json", json.dumps(records, indent=1) + "\n")
        for env in self.config.envs:
            mine = [r for r in records if r["env"] == env]
            if mine:
                variance_bars(mine, run_dir / "plots" / f"variance_{env}.png",
                              f"{env}: 1 − Var/Var(SF) on the chosen components ({self.config.repeats} estimates "
                              "each)")
        atomic_write_text(run_dir / "summary.md", "# stochgrad rl variance\n\n" + format_table(records) + "\n")

    def close(self) -> None:
        if self.own and self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None


RL_VARIANCE = Command("rl variance", VarianceConfig, VarianceExperiment)


def records_of(rows: list[dict]) -> list[dict]:
    """The records of every metrics row, in order."""
    return [rec for row in rows for rec in row["records"]]


def format_table(records: list[dict]) -> str:
    """Markdown table of the records."""
    lines = ["| env | N | M | K | budget 2(N+MK) | estimator | variance reduction vs SF | components ever chosen |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in records:
        lines.append(f"| {r['env']} | {r['n']} | {r['m']} | {r['k']} | {r['budget']} | {r['estimator']} | "
                     f"{r['reduction']:+.2f} ± {r['stderr']:.2f} | {r['components']} |")
    return "\n".join(lines)


def run_variance(config: VarianceConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 evaluator: Any = None) -> tuple[list[dict], Path]:
    """Run the experiment on every environment through the one run abstraction into ``out`` (``resume``
    continues an interrupted one); returns the records and the run directory."""
    command = RL_VARIANCE if evaluator is None else Command(
        RL_VARIANCE.name, VarianceConfig, lambda cfg, run_dir: VarianceExperiment(cfg, run_dir, evaluator))
    res = run(command, config, out, resume=resume, progress=progress)
    return records_of(res.rows), res.run_dir
