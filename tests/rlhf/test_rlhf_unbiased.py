"""The estimators against exact gradients on a toy policy whose sequences can be enumerated.

Each test repeats an estimate many times with fixed seeds and z-tests every gradient component against the exact
gradient of the (KL-regularised) objective. A threshold of |z| < 4.5 over a few dozen components makes a false
alarm negligible; the group-mean test shows the same check rejects a biased estimator.
"""

from __future__ import annotations

import pytest
import rlhf_toy as toy
import torch

from stochgrad.rlhf.estimators import PolicyGradient, estimator_config

REPEATS = 1500
THRESHOLD = 4.5


def _setup(offset: float):
    g = torch.Generator().manual_seed(7)
    theta0 = torch.randn(toy.N_PROMPTS, toy.V + 1, toy.V, generator=g) * 0.7
    theta_ref = theta0 + torch.randn(theta0.shape, generator=g) * 0.5
    return theta0, theta_ref, toy.reward_table(3, offset)


def estimates(config, repeats: int = REPEATS, seed: int = 0, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeated estimates of ∇J (ascent direction) ``[R, n_params]`` and the exact ∇J ``[n_params]``."""
    theta0, theta_ref, table = _setup(offset)
    theta = theta0.clone().requires_grad_(True)
    exact = torch.autograd.grad(toy.exact_objective(theta, table, config.beta, theta_ref), theta)[0].flatten()
    est = PolicyGradient(config)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(repeats):
        x, toks, mask = toy.sample(theta.detach(), config.k, gen)
        logp = toy.token_log_probs(theta, x, toks, mask)
        ref = toy.token_log_probs(theta_ref, x, toks, mask)
        r = toy.rewards_of(x, toks, mask, table)
        loss = est.loss(logp, mask, r, ref).loss
        out.append(-torch.autograd.grad(loss, theta)[0].flatten())
    return torch.stack(out), exact


def max_abs_z(samples: torch.Tensor, target: torch.Tensor) -> float:
    mean, se = samples.mean(0), samples.std(0) / samples.shape[0] ** 0.5
    used = se > 0
    assert torch.allclose(mean[~used], target[~used], atol=1e-6)   # cells no sample reaches: exactly 0
    return float(((mean[used] - target[used]) / se[used]).abs().max())


@pytest.mark.parametrize("name, options", [
    ("rloo", {"k": 4, "beta": 0.0}),
    ("rloo", {"k": 2, "beta": 0.3}),                        # k1 summed into the reward: regularised objective
    ("rloo", {"k": 3, "beta": 0.3, "level": "token"}),      # reward-to-go with per-token k1 penalties
    ("reinforce", {"beta": 0.3}),                           # moving-average baseline from past batches only
    ("reinforce", {"baseline": "none", "beta": 0.0}),
])
def test_unbiased_estimators_match_the_exact_gradient(name, options) -> None:
    samples, exact = estimates(estimator_config(name, **options))
    assert max_abs_z(samples, exact) < THRESHOLD


def test_the_leave_one_out_advantage_is_unbiased_and_the_group_mean_one_is_shrunk_by_k_minus_1_over_k() -> None:
    """Same samples (same seed): RLOO passes; the group mean, which includes the sample's own reward, fails the
    same test, and its mean is (k − 1)/k of the exact gradient, as the module docstring derives."""
    loo, exact = estimates(estimator_config("rloo", k=2, beta=0.0))
    grp, _ = estimates(estimator_config("rloo", k=2, beta=0.0, baseline="group-mean"))
    assert max_abs_z(loo, exact) < THRESHOLD
    assert max_abs_z(grp, exact) > 2 * THRESHOLD
    assert max_abs_z(grp, exact / 2) < THRESHOLD
    # With the same samples the two differ exactly by the factor 1/2 per estimate.
    assert torch.allclose(grp, loo / 2, atol=1e-6)


def test_a_baseline_reduces_the_variance_at_equal_samples() -> None:
    """Rewards around 3 (not 0): without a baseline every sample pushes its own tokens up."""
    loo, _ = estimates(estimator_config("rloo", k=4, beta=0.0), repeats=400, offset=3.0)
    none, _ = estimates(estimator_config("rloo", k=4, beta=0.0, baseline="none"), repeats=400, offset=3.0)
    assert loo.var(0).sum() < 0.5 * none.var(0).sum()
