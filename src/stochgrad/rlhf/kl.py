"""Per-token estimators of KL(π_θ ‖ π_ref) from tokens sampled from π_θ (Schulman 2020, "Approximating KL
divergence").

With ℓ_t = log π_θ(y_t | ·) − log π_ref(y_t | ·) at a token y_t ~ π_θ(· | x, y_<t):

=====  ==========================  =======================================================================
name   value                       properties
=====  ==========================  =======================================================================
k1     ℓ                           unbiased for the KL; can be negative; high variance
k2     ℓ² / 2                      biased (exact to second order when π_θ ≈ π_ref); never negative
k3     exp(−ℓ) − 1 + ℓ             unbiased for the KL and never negative ((r − 1) − log r with r = 1/exp ℓ)
=====  ==========================  =======================================================================

Their *gradients* differ from their values' story: as a term of the loss (differentiated through log π_θ with
the sampled tokens held fixed), E[∇k1] = 0, E[∇k2] = ∇ KL(π_θ ‖ π_ref) and E[∇k3] = ∇ KL(π_ref ‖ π_θ), per
token given the prefix; as a penalty subtracted from the reward (not differentiated), k1 gives the unbiased
score-function gradient of the KL-regularised objective. See docs/rlhf.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


def kl_per_token(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """The per-token KL estimate ``[B, T]`` from log-probabilities ``[B, T]`` of the sampled tokens under π_θ
    (``logp``) and π_ref (``ref_logp``). Differentiable in both; padding positions should be masked by the
    caller."""
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")
