"""Repeated ES estimates at a fixed policy, for ``stochgrad rlhf variance`` (the counterpart of
:func:`stochgrad.rlhf.diagnostics.gradient_estimates`).

Repeat r draws m = N_completions / population prompts uniformly without replacement and one population with
the generator seeded ``seed + r``; every member completes those m prompts once, so an ES estimate uses
``completions`` sampled completions, the same number as an action-space estimate it is compared with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.rlhf.diagnostics import GradientStats, check_completions, gradient_stats, project
from stochgrad.rlhf.es.step import es_step, make_noise, trainable
from stochgrad.rlhf.es.update import EsConfig
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import RewardFunction


def es_gradient_estimates(policy: Policy, reference: Policy | None, reward_fn: RewardFunction,
                          prompts: Sequence[str], config: EsConfig, completions: int, repeats: int, seed: int = 0,
                          projections: int | None = None, progress=None) -> tuple[Tensor, float, float]:
    """R ES estimates of the ascent direction at the current policy (weights unchanged, ``.grad`` cleared).

    Returns:
      The estimates ``[R, D or m]``, the mean reward, seconds per estimate.
    """
    check_completions(completions, config.population, len(prompts), "population")
    noise = make_noise(policy, config.rank)
    _, params = trainable(policy)
    out, rewards, elapsed = [], [], 0.0
    for r in range(repeats):
        gen = torch.Generator().manual_seed(seed + r)
        t0 = time.perf_counter()
        pick = torch.randperm(len(prompts), generator=gen)[:completions // config.population].tolist()
        step = es_step(policy, reference, reward_fn, [prompts[i] for i in pick], config, noise, gen)
        grads = [p.grad for p in params]
        vec = project(grads, projections, seed=seed) if projections else torch.cat([g.reshape(-1) for g in grads])
        out.append(-vec.double().cpu())
        rewards.append(float(step.rewards.mean()))
        for p in params:
            p.grad = None
        elapsed += time.perf_counter() - t0
        if progress is not None:
            progress()
    return torch.stack(out), sum(rewards) / len(rewards), elapsed / max(1, repeats)


def measure_es(policy: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: Sequence[str],
               config: EsConfig, completions: int, repeats: int, name: str = "es", seed: int = 0,
               projections: int | None = None, progress=None) -> GradientStats:
    """:func:`es_gradient_estimates` summarised as :class:`~stochgrad.rlhf.diagnostics.GradientStats`
    (``k`` = 1: every member completes each prompt once)."""
    est, reward, sec = es_gradient_estimates(policy, reference, reward_fn, prompts, config, completions, repeats,
                                             seed=seed, projections=projections, progress=progress)
    return GradientStats(name=name, k=1, completions=completions, repeats=repeats, reward=reward,
                         seconds_per_estimate=sec, projections=projections, **gradient_stats(est))
