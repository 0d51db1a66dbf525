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
from dataclasses import asdict, dataclass, field
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
from stochgrad.rl.parallel import make_evaluator
from stochgrad.rl.plots import variance_bars
from stochgrad.rl.rollout import VARIANCE, Episode, episode_seed, run_episode
from stochgrad.rl.tasks import preset
from stochgrad.runs.files import atomic_write_json, atomic_write_text, load_checkpoint, prepare_run_dir


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
      seed, evaluator, workers, ray_address: as for training.
    """

    envs: list[str] = field(default_factory=lambda: ["Hopper-v5"])
    n: list[int] = field(default_factory=lambda: [4, 8])
    m: list[int] = field(default_factory=lambda: [1])
    k: list[int] = field(default_factory=lambda: [2, 4])
    repeats: int = 30
    warmup: int = 5
    sigma: float | None = None
    max_episode_steps: int | None = None
    policy: str | None = None
    seed: int = 0
    evaluator: str = "process"
    workers: int | None = None
    ray_address: str | None = None

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


def _fixed_policy(config: VarianceConfig, env: str, obs_dim: int, n_params: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if config.policy is None:
        return np.zeros(n_params), np.zeros(obs_dim), np.ones(obs_dim)
    run = Path(config.policy)
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


def measure_env(config: VarianceConfig, env: str, evaluator: Any, bar: Any = None) -> list[dict]:
    """The records of every (N, M, K) and hybrid on one environment."""
    spec = env_spec(env, config.max_episode_steps)
    p = preset(env)
    sigma = config.sigma if config.sigma is not None else (p.noise if p else 0.05)
    shift = p.shift if p else 0.0
    w, mean, std = _fixed_policy(config, env, spec.obs_dim, spec.n_params)
    dist = Normal(torch.as_tensor(w), torch.full((spec.n_params,), sigma, dtype=torch.float64))
    low, high = np.array(spec.low), np.array(spec.high)
    counter = [0]

    def f(points: torch.Tensor) -> torch.Tensor:
        it = counter[0]
        counter[0] += 1
        eps = [Episode(env, pt.numpy(), mean, std, low, high, episode_seed(config.seed, it, i, VARIANCE),
                       spec.max_episode_steps, shift, "clip", False) for i, pt in enumerate(points)]
        res = evaluator.map(run_episode, eps)
        if bar is not None:
            bar.update(len(eps))
        return torch.tensor([r.shifted_return for r in res], dtype=torch.float64)

    records = []
    gen = torch.Generator().manual_seed(config.seed)
    for n, m, k in config.combos():
        if k > spec.n_params:
            raise InvalidArgumentError(f"k: {env} has {spec.n_params} policy parameters; got K={k}")
        budget = 2 * (n + m * k)
        sf = ScoreFunction(budget, baseline="loo", antithetic=True)
        sf_grads = np.stack([sf.estimate(f, dist, gen, ("loc",)).grad["loc"].numpy()
                             for _ in range(config.repeats)])
        runs = {}
        for name, cls in (("ccmvd", CCMVD), ("ccsf", CCSF)):
            est = cls(n_samples=n, samples_per_dim=m, k=k)
            for _ in range(config.warmup):
                est.estimate(f, dist, gen, ("loc",))
            grads, chosen = [], []
            for _ in range(config.repeats):
                g = est.estimate(f, dist, gen, ("loc",))
                grads.append(g.grad["loc"].numpy())
                mask = np.zeros(spec.n_params, dtype=bool)
                mask[g.info["components"]["loc"].numpy().reshape(-1)] = True
                chosen.append(mask)
            runs[name] = (np.stack(grads), np.stack(chosen))
        center = np.concatenate([sf_grads, *[g for g, _ in runs.values()]]).mean(0)
        for name, (grads, chosen) in runs.items():
            red, se = relative_reduction(grads, chosen, sf_grads, center)
            records.append({"env": env, "n": n, "m": m, "k": k, "budget": budget, "estimator": name,
                            "reduction": red, "stderr": se, "components": int(chosen.any(0).sum()),
                            "repeats": config.repeats, "sigma": sigma, "horizon": spec.max_episode_steps})
    return records


def format_table(records: list[dict]) -> str:
    """Markdown table of the records."""
    lines = ["| env | N | M | K | budget 2(N+MK) | estimator | variance reduction vs SF | components ever chosen |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in records:
        lines.append(f"| {r['env']} | {r['n']} | {r['m']} | {r['k']} | {r['budget']} | {r['estimator']} | "
                     f"{r['reduction']:+.2f} ± {r['stderr']:.2f} | {r['components']} |")
    return "\n".join(lines)


def run_variance(config: VarianceConfig, out: str | Path, progress: bool = True, evaluator: Any = None,
                 ) -> tuple[list[dict], Path]:
    """Run the experiment on every environment; write config.json, variance.json, variance_<env>.png and
    summary.md into ``out``."""
    config.validate()
    out_dir = prepare_run_dir(out)
    atomic_write_json(out_dir / "config.json", asdict(config))
    own = evaluator is None
    evaluator = evaluator if evaluator is not None else make_evaluator(config.evaluator, config.workers,
                                                                        config.ray_address)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        per_env = sum(2 * (n + m * k) * (config.repeats * 3 + 2 * config.warmup) for n, m, k in config.combos())
        bar = tqdm(total=per_env * len(config.envs), unit="episode", desc="variance", dynamic_ncols=True)
    records: list[dict] = []
    try:
        for env in config.envs:
            recs = measure_env(config, env, evaluator, bar)
            records += recs
            atomic_write_text(out_dir / "variance.json", json.dumps(records, indent=1) + "\n")
            variance_bars(recs, out_dir / f"variance_{env}.png",
                          f"{env}: 1 − Var/Var(SF) on the chosen components ({config.repeats} estimates each)")
    finally:
        if bar is not None:
            bar.close()
        if own:
            evaluator.close()
    atomic_write_text(out_dir / "summary.md", "# stochgrad rl variance\n\n" + format_table(records) + "\n")
    return records, out_dir
