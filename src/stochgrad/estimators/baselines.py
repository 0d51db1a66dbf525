"""Control variates for the score function: ``ĝ = mean_n (f_n − b_n) · s_n``.

Every baseline here except ``"mean"`` is computed without sample n's own value (or its antithetic partner's),
so ``E[b_n s_n] = E[b_n] E[s_n] = 0`` and the estimate stays unbiased. ``"mean"`` includes f_n in its own
baseline, which scales the expected gradient by (N − 1)/N; it is kept because it is what many
implementations do, and our tests measure exactly that bias.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError

BASELINES: tuple[str | None, ...] = (None, "mean", "loo", "optimal")


def check_baseline(baseline: str | None) -> str | None:
    """Validate a baseline name (``None`` means no baseline)."""
    if baseline not in BASELINES:
        raise InvalidArgumentError(
            f"baseline: got {baseline!r}; choose one of {list(BASELINES)}")
    return baseline


def _leave_out(total: Tensor, own: Tensor, count: int) -> Tensor:
    return (total - own) / count


def compute_baseline(baseline: str | None, values: Tensor, score: Tensor, pair_of: Tensor | None) -> Tensor:
    """The baseline for each sample, broadcastable against ``score``.

    Args:
      baseline: one of :data:`BASELINES`.
      values: f at the N samples, ``[N, *batch]``.
      score: ``[N, *batch, *components]`` scores of the parameter being estimated (used only by "optimal";
        the other baselines are returned as ``[N, *batch]``, or a scalar 0).
      pair_of: for antithetic sampling, the index of each sample's partner ``[N]``; None otherwise.
    Returns:
      ``[N, *batch, 1...]`` (or ``[N, *batch, *components]`` for "optimal"), or the scalar 0 for None.
    """
    extra = score.dim() - values.dim() if baseline == "optimal" else 0
    v = values.reshape(*values.shape, *([1] * extra)) if extra else values
    n = values.shape[0]
    if baseline is None:
        return v.new_zeros(())
    if baseline == "mean":
        return v.mean(0, keepdim=True)
    own = v if pair_of is None else v + v[pair_of]
    left = n - (1 if pair_of is None else 2)
    if baseline == "loo":
        return _leave_out(v.sum(0, keepdim=True), own, left)
    # "optimal": b_i = E[f s_i²] / E[s_i²], from the other samples.
    s2 = score * score
    own_s2 = s2 if pair_of is None else s2 + s2[pair_of]
    own_fs2 = v * s2 if pair_of is None else v * s2 + (v * s2)[pair_of]
    num = (v * s2).sum(0, keepdim=True) - own_fs2
    den = s2.sum(0, keepdim=True) - own_s2
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)
