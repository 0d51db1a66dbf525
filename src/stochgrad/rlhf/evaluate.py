"""Evaluate a policy on a fixed prompt set: mean reward, KL to a reference, example texts.

The same seed gives the same completions for the same weights, so "before" and "after" (or two trainers) are
compared on identical random numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from stochgrad.rlhf.kl import kl_per_token
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import RewardFunction, evaluate_rewards


@dataclass
class Evaluation:
    """Mean reward (and its standard error) over ``n`` completions, KL(π ‖ π_ref) per completion (k1 and k3
    estimates; NaN without a reference), mean length, and the first few (prompt, completion, reward)."""

    reward: float
    reward_se: float
    kl: float
    kl_k3: float
    length: float
    n: int
    examples: list[dict] = field(default_factory=list)


@torch.no_grad()
def evaluate(policy: Policy, reward_fn: RewardFunction, prompts: Sequence[str], k: int = 4, seed: int = 12345,
             reference: Policy | None = None, n_examples: int = 6) -> Evaluation:
    """Sample ``k`` completions of every prompt with a generator seeded ``seed`` and score them."""
    rollout = policy.sample(list(prompts), k, torch.Generator().manual_seed(seed))
    rewards = evaluate_rewards(reward_fn, rollout.prompts, rollout.completions)
    kl = kl3 = float("nan")
    if reference is not None:
        logp = policy.token_log_probs(rollout)
        ref = reference.token_log_probs(rollout)
        m = rollout.completion_mask
        kl = float(((logp - ref) * m).sum(1).mean())
        kl3 = float((kl_per_token(logp, ref, "k3") * m).sum(1).mean())
    step = max(1, len(rollout) // n_examples)
    examples = [{"prompt": rollout.prompts[i], "completion": rollout.completions[i], "reward": float(rewards[i])}
                for i in range(0, len(rollout), step)][:n_examples]
    n = len(rewards)
    return Evaluation(float(rewards.mean()), float(rewards.std() / n ** 0.5) if n > 1 else float("nan"), kl, kl3,
                      float(rollout.lengths.float().mean()), n, examples)
