"""Running per-component statistics that the adaptive estimators (CCMVD, CCSF, Auto) decide from.

Everything here is updated *after* an estimate and read *before* the next, so decisions never depend on the
samples they weigh.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Ema:
    """Per-component exponential moving average with bias correction (the first observation is taken as is)."""

    def __init__(self, shape: torch.Size, decay: float, dtype: torch.dtype) -> None:
        self.decay = decay
        self.value = torch.zeros(shape, dtype=dtype)
        self.count = torch.zeros(shape, dtype=torch.long)

    def update(self, obs: Tensor, mask: Tensor | None = None) -> None:
        """Fold ``obs`` in where ``mask`` (default: everywhere) and ``obs`` is finite."""
        ok = torch.isfinite(obs)
        if mask is not None:
            ok = ok & mask
        first = ok & (self.count == 0)
        later = ok & (self.count > 0)
        mixed = self.decay * self.value + (1 - self.decay) * obs
        self.value = torch.where(first, obs, torch.where(later, mixed, self.value))
        self.count = self.count + ok.long()

    @property
    def known(self) -> Tensor:
        return self.count > 0

    def state_dict(self) -> dict:
        return {"value": self.value.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.count = state["value"].clone(), state["count"].clone()


class ComponentStats:
    """Running variances of two estimators of one parameter's components, ``[*batch, J]`` each.

    ``first``: the variance of the always-run estimator (the score function), from its own samples.
    ``second``: the variance of the estimator run on chosen components (MVD or a second score function), from
    its own samples when it has several, otherwise from successive estimates of the same component,
    ``E (b_t − b_s)² = σ²(1/m_t + 1/m_s)`` for independent estimates from m_t and m_s samples whose mean moves
    slowly. (The difference to the
    score-function estimate would do too, ``E (b − a)² = σ²_b + σ²_a``, but it buries a small σ²_b under a large
    σ²_a.)
    """

    def __init__(self, shape: torch.Size, decay: float, dtype: torch.dtype) -> None:
        self.first = Ema(shape, decay, dtype)
        self.second = Ema(shape, decay, dtype)
        self.last = torch.zeros(shape, dtype=dtype)
        self.last_count = torch.ones(shape, dtype=dtype)
        self.has_last = torch.zeros(shape, dtype=torch.bool)

    @property
    def shape(self) -> torch.Size:
        return self.first.value.shape

    def update(self, first_var: Tensor | None, chosen: Tensor | None, second: Tensor | None,
               second_var: Tensor | None, counts: Tensor | None = None) -> None:
        """Fold in one estimate.

        Args:
          first_var: the first estimator's variance estimate, ``[*batch, J]`` (None if it did not run).
          chosen: mask of the components the second estimator ran on (None if it did not run).
          second: its estimates there, ``[*batch, J]`` (other entries ignored).
          second_var: its own variance estimates, in the units tracked (NaN where it had one sample).
          counts: samples behind each of ``second``'s estimates when the tracked unit is one sample (an
            estimate from m samples then has variance σ²/m); None when the tracked unit is the estimate.
        """
        if first_var is not None:
            self.first.update(first_var)
        if chosen is None:
            return
        own = second_var if second_var is not None else torch.full_like(second, float("nan"))
        has_own = chosen & torch.isfinite(own)
        self.second.update(own, has_own)
        m = torch.ones_like(second) if counts is None else counts.to(second.dtype).clamp_min(1)
        successive = (second - self.last) ** 2 / (1 / m + 1 / self.last_count)
        self.second.update(successive, chosen & ~has_own & self.has_last)
        self.last = torch.where(chosen, second, self.last)
        self.last_count = torch.where(chosen, m, self.last_count)
        self.has_last = self.has_last | chosen

    def state_dict(self) -> dict:
        return {"first": self.first.state_dict(), "second": self.second.state_dict(), "last": self.last.clone(),
                "last_count": self.last_count.clone(), "has_last": self.has_last.clone()}

    @classmethod
    def from_state_dict(cls, state: dict, decay: float) -> ComponentStats:
        out = cls(state["last"].shape, decay, state["last"].dtype)
        out.first.load_state_dict(state["first"])
        out.second.load_state_dict(state["second"])
        out.last, out.has_last = state["last"].clone(), state["has_last"].clone()
        out.last_count = state["last_count"].clone()
        return out


class StatsMixin:
    """Per-parameter :class:`ComponentStats` with reset/checkpoint support, for stateful estimators."""

    decay: float
    _stats: dict[str, ComponentStats]

    def reset(self) -> None:
        """Forget the running statistics."""
        self._stats = {}

    def state_dict(self) -> dict:
        """Running statistics, for checkpoints (tensors only: loadable with ``weights_only=True``)."""
        return {name: s.state_dict() for name, s in self._stats.items()}

    def load_state_dict(self, state: dict) -> None:
        self._stats = {name: ComponentStats.from_state_dict(s, self.decay) for name, s in state.items()}

    def _ensure_stats(self, dist, names: tuple[str, ...]) -> None:
        """(Re)start the statistics when the parameters or their shapes change."""
        want = {n: torch.Size((*dist.batch_shape, dist.n_components(n))) for n in names}
        if set(self._stats) != set(names) or any(self._stats[n].shape != want[n] for n in names):
            self._stats = {n: ComponentStats(want[n], self.decay, dist.dtype) for n in names}
