"""Gradient quality at a fixed policy: repeat an estimate R times and measure its spread.

Every repeat draws its P = N/k prompts uniformly without replacement from the prompt set and k completions of
each (N completions in all), so estimators with different k estimate the same quantity, the gradient of the
mean over the prompt set, at an equal number of sampled completions N. Estimators with the same k see the
same prompts and completions (same seeds). Reported, over the R estimates ĝ_r (each a flattened gradient of
all parameters, or a random projection of it):

- ``trace_variance``: Σ_j Var(ĝ_j), the expected squared distance of one estimate from the mean;
- ``mean_norm_sq``: an unbiased estimate of ‖E ĝ‖² (‖ḡ‖² − trace/R);
- ``relative_variance``: trace / ‖E ĝ‖², which does not depend on the estimate's scale (GRPO's std scaling
  rescales the gradient; compare this number, not the trace, across scalings), with a bootstrap standard error
  over the R repeats (``relative_variance_se``);
- ``cosine``: the mean cosine between each estimate and the mean of the *other* R − 1 (leaving it out removes
  the optimistic bias of comparing an estimate with a mean that contains it).

For a large model pass ``projections=m``: each gradient is multiplied by a fixed m × D Gaussian matrix scaled by
1/√m (generated in pieces, never stored), which preserves squared norms and inner products in expectation, so
the trace and cosines are estimated from m numbers per repeat instead of D.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.rlhf.estimators import EstimatorConfig, PolicyGradient
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import RewardFunction, evaluate_rewards


@dataclass
class GradientStats:
    """The spread of R repeated estimates (see the module docstring)."""

    name: str
    k: int
    completions: int
    repeats: int
    trace_variance: float
    mean_norm_sq: float
    relative_variance: float
    relative_variance_se: float
    cosine: float
    cosine_std: float
    reward: float
    seconds_per_estimate: float
    projections: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def project(grads: Sequence[Tensor], m: int, seed: int = 0) -> Tensor:
    """``S g`` for the flattened gradient g = concat(grads) and a fixed Gaussian S ``[m, D]`` / √m.

    Row j of parameter i's block of S is drawn from its own seed (``seed``, i, j), one row at a time, so S is
    the same on every call, its first m rows do not depend on m, and no m × D matrix is ever held.
    """
    out = torch.zeros(m, dtype=torch.float64)
    gen = torch.Generator()
    for i, g in enumerate(grads):
        flat = g.reshape(-1).double()
        for j in range(m):
            gen.manual_seed((seed * 1_000_003 + i) * 100_003 + j)
            out[j] += torch.randn(flat.numel(), generator=gen, dtype=torch.float64) @ flat
    return out / math.sqrt(m)


def gradient_stats(estimates: Tensor, bootstrap: int = 200, seed: int = 0) -> dict[str, float]:
    """Trace of the covariance, ‖E ĝ‖², relative variance (with a bootstrap standard error over the repeats,
    ``bootstrap`` resamples; 0 skips it) and leave-one-out cosines of ``[R, D]`` estimates."""
    r = estimates.shape[0]
    if r < 3:
        raise BudgetError(f"repeats: need at least 3 repeated estimates; got {r}")
    x = estimates.double()

    def trace_norm(idx: Tensor | None) -> tuple[float, float]:
        y = x if idx is None else x[idx]
        mean = y.mean(0)
        trace = float(((y - mean) ** 2).sum() / (r - 1))
        return trace, float(mean @ mean) - trace / r

    trace, norm_sq = trace_norm(None)
    relative = trace / norm_sq if norm_sq > 0 else math.inf
    se = math.nan
    if bootstrap:
        gen = torch.Generator().manual_seed(seed)
        boot = []
        for _ in range(bootstrap):
            t, n = trace_norm(torch.randint(r, (r,), generator=gen))
            boot.append(t / n if n > 0 else math.inf)
        finite = torch.tensor([b for b in boot if math.isfinite(b)], dtype=torch.float64)
        se = float(finite.std()) if len(finite) == len(boot) else math.inf
    others = (x.sum(0, keepdim=True) - x) / (r - 1)
    cos = torch.nn.functional.cosine_similarity(x, others, dim=1)
    return {"trace_variance": trace, "mean_norm_sq": norm_sq, "relative_variance": relative,
            "relative_variance_se": se, "cosine": float(cos.mean()), "cosine_std": float(cos.std())}


def gradient_estimates(policy: Policy, reference: Policy | None, reward_fn: RewardFunction,
                       prompts: Sequence[str], config: EstimatorConfig, completions: int, repeats: int,
                       seed: int = 0, projections: int | None = None, warmup: int = 3,
                       progress=None) -> tuple[Tensor, float, float]:
    """R gradient estimates at the current (unchanged) policy.

    Args:
      policy, reference: π_θ and π_ref (``reference`` may be None when β = 0).
      reward_fn: the reward.
      prompts: the prompt set (at least N/k prompts).
      config: the estimator.
      completions: N, sampled completions per estimate (a multiple of k).
      repeats: R.
      seed: repeat r uses the generator seeded ``seed + r``.
      projections: m for random projections; None keeps every parameter.
      warmup: estimates made (and dropped) first when the baseline is a moving average, so it holds a history.
      progress: an optional callable invoked after every estimate.
    Returns:
      The estimates ``[R, D or m]`` of +∇J (ascent direction), the mean reward, seconds per estimate.
    """
    check_completions(completions, config.k, len(prompts))
    n_prompts = completions // config.k
    est = PolicyGradient(config)
    params = [p for p in policy.parameters() if p.requires_grad]
    out, rewards = [], []
    elapsed = 0.0
    n_warm = warmup if config.baseline == "moving-average" else 0
    for r in range(-n_warm, repeats):
        gen = torch.Generator().manual_seed(seed + r + 1_000_000 * (r < 0))
        t0 = time.perf_counter()
        pick = torch.randperm(len(prompts), generator=gen)[:n_prompts].tolist()
        rollout = policy.sample([prompts[i] for i in pick], config.k, gen)
        values = evaluate_rewards(reward_fn, rollout.prompts, rollout.completions)
        logp = policy.token_log_probs(rollout)
        ref = None
        if config.beta > 0:
            with torch.no_grad():
                ref = reference.token_log_probs(rollout)
        loss = est.loss(logp, rollout.completion_mask, values.to(logp.device), ref).loss
        grads = torch.autograd.grad(loss, params)
        if r < 0:
            continue
        vec = project(grads, projections, seed=seed) if projections else torch.cat([g.reshape(-1) for g in grads])
        out.append(-vec.double().cpu())
        rewards.append(float(values.mean()))
        elapsed += time.perf_counter() - t0
        if progress is not None:
            progress()
    return torch.stack(out), sum(rewards) / len(rewards), elapsed / max(1, repeats)


def check_completions(completions: int, per_prompt: int, n_prompts: int | None = None, name: str = "k") -> None:
    """Raise unless ``completions`` per estimate is a multiple of the completions each prompt gets (``k``, or an
    ES population) and, given the prompt count, needs no more distinct prompts than there are.

    Raises:
      BudgetError / InvalidArgumentError: naming ``completions`` or ``prompts``.
    """
    if completions % per_prompt:
        raise BudgetError(f"completions: {completions} sampled completions per estimate is not a multiple of "
                          f"{name}={per_prompt}")
    need = completions // per_prompt
    if n_prompts is not None and need > n_prompts:
        raise InvalidArgumentError(f"prompts: {completions} completions with {name}={per_prompt} need {need} "
                                   f"distinct prompts; the prompt set has {n_prompts}")


def measure(policy: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: Sequence[str],
            config: EstimatorConfig, completions: int, repeats: int, name: str = "", seed: int = 0,
            projections: int | None = None, progress=None) -> GradientStats:
    """:func:`gradient_estimates` summarised as :class:`GradientStats`."""
    est, reward, sec = gradient_estimates(policy, reference, reward_fn, prompts, config, completions, repeats,
                                          seed=seed, projections=projections, progress=progress)
    return GradientStats(name=name, k=config.k, completions=completions, repeats=repeats, reward=reward,
                         seconds_per_estimate=sec, projections=projections, **gradient_stats(est))
