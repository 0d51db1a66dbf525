"""Fine-tune causal language models against a reward with REINFORCE-family estimators (extra ``rlhf``).

Example::

    import torch
    from stochgrad.rlhf import Policy, PolicyGradient, VaderReward, estimator_config, evaluate_rewards

    policy = Policy.from_pretrained("runs/rlhf-demo/base-model", max_new_tokens=16)
    ref = policy.reference()
    est = PolicyGradient(estimator_config("rloo", k=4, beta=0.05))
    opt = torch.optim.Adam(policy.parameters(), lr=5e-4)
    gen = torch.Generator().manual_seed(0)
    rollout = policy.sample(["the movie was", "i think the food is"], k=4, generator=gen)
    rewards = evaluate_rewards(VaderReward(), rollout.prompts, rollout.completions)
    with torch.no_grad():
        ref_logp = ref.token_log_probs(rollout)
    out = est.loss(policy.token_log_probs(rollout), rollout.completion_mask, rewards, ref_logp)
    opt.zero_grad(); out.loss.backward(); opt.step()

``transformers`` is imported only when a model is loaded. See docs/rlhf.md.
"""

from stochgrad.rlhf.diagnostics import GradientStats, gradient_estimates, gradient_stats, measure, project
from stochgrad.rlhf.estimators import (
    AGGREGATIONS,
    BASELINES,
    KL_PLACEMENTS,
    LEVELS,
    PRESETS,
    SCALINGS,
    EstimatorConfig,
    LossOutput,
    PolicyGradient,
    estimator_config,
)
from stochgrad.rlhf.es import EsConfig, SeededNoise, es_step, make_noise
from stochgrad.rlhf.evaluate import Evaluation, evaluate
from stochgrad.rlhf.kl import KL_ESTIMATORS, kl_per_token
from stochgrad.rlhf.policy import Policy, Rollout, top_k_filter
from stochgrad.rlhf.rewards import (
    RewardFunction,
    SequenceClassifierReward,
    VaderReward,
    evaluate_rewards,
    make_reward,
)
from stochgrad.rlhf.trainer import TrainConfig, TrainResult, load_prompts, run_train

__all__ = [
    "AGGREGATIONS",
    "BASELINES",
    "KL_ESTIMATORS",
    "KL_PLACEMENTS",
    "LEVELS",
    "PRESETS",
    "SCALINGS",
    "EsConfig",
    "EstimatorConfig",
    "Evaluation",
    "GradientStats",
    "LossOutput",
    "Policy",
    "PolicyGradient",
    "RewardFunction",
    "Rollout",
    "SeededNoise",
    "SequenceClassifierReward",
    "TrainConfig",
    "TrainResult",
    "VaderReward",
    "es_step",
    "estimator_config",
    "evaluate",
    "evaluate_rewards",
    "gradient_estimates",
    "gradient_stats",
    "kl_per_token",
    "load_prompts",
    "make_noise",
    "make_reward",
    "measure",
    "project",
    "run_train",
    "top_k_filter",
]
