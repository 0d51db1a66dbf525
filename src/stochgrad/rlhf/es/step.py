"""One ES population on a language-model policy: evaluate every member without touching the weights, then
write the estimate into ``.grad``.

Each antithetic pair j is one noise seed and one sampling seed: both members θ ± σ·ε_j complete the same prompts
with a generator started from the same sampling seed (common random numbers), so the difference of their
fitnesses reflects ε_j rather than the luck of sampling. A member's fitness is the mean over its completions of
r − β·Σ_t k1 (k1 = log π_member − log π_ref at the sampled tokens; β = 0 needs no reference). A member runs
through :meth:`~stochgrad.rlhf.policy.Policy.with_parameters`: the model's own tensors are never written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError
from stochgrad.rlhf.es.noise import SeededNoise
from stochgrad.rlhf.es.update import EsConfig, pair_weights, perturbed, shape_fitness, write_gradient
from stochgrad.rlhf.policy import Policy, Rollout
from stochgrad.rlhf.rewards import RewardFunction, evaluate_rewards

_SEED_HIGH = 2 ** 62


def trainable(policy: Policy) -> tuple[list[str], list[Tensor]]:
    """Names and tensors of the parameters that require gradients, in ``named_parameters`` order."""
    named = [(n, p) for n, p in policy.model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def make_noise(policy: Policy, rank: int) -> SeededNoise:
    """The :class:`SeededNoise` of ``policy``'s trainable parameters, on their device (checks ``rank``)."""
    names, params = trainable(policy)
    return SeededNoise([p.shape for p in params], rank=rank, device=params[0].device, names=names)


@dataclass
class EsStep:
    """What one population computed (members ordered pair 0 +, pair 0 −, pair 1 +, …).

    Attributes:
      fitness: ``[N]`` each member's mean of r − β·KL.
      shaped: ``[N]`` the shaped fitness.
      rewards: ``[N, m]`` the reward of each member's m completions.
      kl: ``[N, m]`` Σ_t k1 per completion to the reference (0 if β = 0).
      kl_k3: ``[N, m]`` Σ_t k3 per completion (0 if β = 0).
      lengths: ``[N, m]`` completion lengths in tokens.
      truncated: ``[N, m]`` True where no end token was sampled.
      seeds: the M noise seeds.
      first: the rollout of member 0 (for logging samples).
    """

    fitness: Tensor
    shaped: Tensor
    rewards: Tensor
    kl: Tensor
    kl_k3: Tensor
    lengths: Tensor
    truncated: Tensor
    seeds: list[int]
    first: Rollout


def es_step(policy: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: list[str],
            config: EsConfig, noise: SeededNoise, generator: torch.Generator) -> EsStep:
    """Evaluate one population on ``prompts`` (one completion of each per member) and set ``.grad``.

    Args:
      policy: the policy at θ; its weights are read, never written (only ``.grad`` is set).
      reference: π_ref, needed when ``config.beta > 0``.
      reward_fn: the black-box reward.
      prompts: the m prompts every member completes.
      config: the ES options.
      noise: :func:`make_noise` of ``policy``.
      generator: a CPU generator; the pair seeds come from it (its state is the whole ES state).
    Returns:
      :class:`EsStep`.
    """
    cfg = config.validate()
    if cfg.beta > 0 and reference is None:
        raise InvalidArgumentError(f"reference: β = {cfg.beta} > 0 needs the reference policy")
    names, params = trainable(policy)
    seeds = torch.randint(_SEED_HIGH, (cfg.pairs,), generator=generator).tolist()
    sample_seeds = torch.randint(_SEED_HIGH, (cfg.pairs,), generator=generator).tolist()
    rewards, kls, k3s, lengths, truncated, first = [], [], [], [], [], None
    for seed, sample_seed in zip(seeds, sample_seeds):
        for sign in (1.0, -1.0):
            member = policy.with_parameters(dict(zip(names, perturbed(params, noise, seed, sign * cfg.sigma))))
            rollout = member.sample(prompts, 1, torch.Generator().manual_seed(sample_seed))
            r = evaluate_rewards(reward_fn, rollout.prompts, rollout.completions).double()
            kl = k3 = torch.zeros_like(r)
            if cfg.beta > 0:
                with torch.no_grad():
                    ratio = (member.token_log_probs(rollout) - reference.token_log_probs(rollout)).double()
                m = rollout.completion_mask.to(ratio.dtype)
                kl = (ratio * m).sum(1).cpu()
                k3 = ((torch.expm1(-ratio) + ratio) * m).sum(1).cpu()
            rewards.append(r)
            kls.append(kl)
            k3s.append(k3)
            lengths.append(rollout.lengths.cpu())
            truncated.append(rollout.truncated.cpu())
            if first is None:
                first = rollout
    rewards_t, kl_t = torch.stack(rewards), torch.stack(kls)
    fitness = rewards_t.mean(1) - cfg.beta * kl_t.mean(1)
    shaped = shape_fitness(fitness, cfg.shaping, cfg.std_eps)
    write_gradient(params, noise, seeds, pair_weights(shaped), cfg.sigma, cfg.population)
    return EsStep(fitness, shaped, rewards_t, kl_t, torch.stack(k3s), torch.stack(lengths),
                  torch.stack(truncated), seeds, first)
