"""Fitness shaping: replace f's values by a transformation that only keeps their order.

``centered_ranks`` maps the values of one estimate to evenly spaced numbers in [−½, ½] by rank (Salimans et
al. 2017). The step becomes invariant to monotone transformations of f and immune to outliers, at the price of
estimating the gradient of E[u(f(x))] for a batch-dependent utility u instead of ∇ E f.

What it does to each estimator (all take the shaped values in place of f's):

- score function: the classic OpenAI-ES/NES estimate with a rank utility; the leave-one-out baseline then
  subtracts the mean of the other ranks.
- MVD: each pair contributes ``c·(u(f(x⁺)) − u(f(x⁻)))``, so a pair still pushes in the direction of its
  better point, but by a rank gap instead of the difference in f; the ranks are taken over all points of the
  estimate, which for MVD are not draws from p_θ, so the utility differs from the score function's.
- hybrids and Auto: both parts see the same ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor


def centered_ranks(values: Tensor) -> Tensor:
    """Ranks of ``values [B, *batch]`` along the first dimension, scaled to [−0.5, 0.5]; ties share a rank.

    Example::

        centered_ranks(torch.tensor([3.0, -1.0, 10.0]))   # tensor([0.0, -0.5, 0.5])
    """
    n = values.shape[0]
    if n == 1:
        return torch.zeros_like(values)
    order = values.argsort(0)
    ranks = torch.empty_like(values).scatter_(0, order, torch.arange(n, dtype=values.dtype).reshape(
        n, *([1] * (values.dim() - 1))).expand_as(values).contiguous())
    # Average the ranks of tied values so that equal f gives equal utility.
    flat_v = values.reshape(n, -1)
    flat_r = ranks.reshape(n, -1)
    for j in range(flat_v.shape[1]):
        v, r = flat_v[:, j], flat_r[:, j]
        uniq, inverse = v.unique(return_inverse=True)
        if uniq.numel() < n:
            sums = torch.zeros(uniq.numel(), dtype=r.dtype).scatter_add_(0, inverse, r)
            counts = torch.zeros(uniq.numel(), dtype=r.dtype).scatter_add_(0, inverse, torch.ones_like(r))
            flat_r[:, j] = (sums / counts)[inverse]
    return (flat_r / (n - 1) - 0.5).reshape(values.shape)


SHAPINGS = {"none": None, "centered-ranks": centered_ranks}
