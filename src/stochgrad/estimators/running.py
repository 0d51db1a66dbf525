"""Running per-component statistics that the adaptive estimators (CCMVD, CCSF, Auto) decide from.

Everything here is updated *after* an estimate and read *before* the next, so decisions never depend on the
samples they weigh.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError


def to_components(t: Tensor, dist, name: str) -> Tensor:
    """``[*batch, *component_shape] -> [*batch, J]``: one parameter's components, flat."""
    return t.reshape(*dist.batch_shape, dist.n_components(name))


def combined_variance(w: Tensor, a: Tensor, va: Tensor | None, b: Tensor, vb: Tensor, m: Tensor | float,
                      previous: tuple[Tensor, Tensor, Tensor], history: Tensor) -> Tensor:
    """The variance of ``w·a + (1 − w)·b`` for independent unbiased estimates a (score function, variance
    ``va`` from its own samples; None: no a, w = 0) and b (from m samples of the second estimator, variance
    ``vb`` from them, NaN where it had one), elementwise ``[*batch, J]``; w was fixed before a and b were drawn.

    Where b had several samples: ``w²·va + (1 − w)²·vb``. Where it had one, its variance is estimated so that
    the estimate is unbiased *given w* (a variance taken from the same running statistics as w would be low
    exactly where w trusts b most):

    - w ≥ ½: ``(1 − w)²(a − b)² + (2w − 1)·va`` (``E (a − b)² = Var a + Var b``; non-negative for w ≥ ½; at
      the first estimate w = ½ and it is ``(a − b)²/4``);
    - else, if the previous estimate had this component: b's per-sample variance from the difference to it,
      ``(b − b_prev)² / (1/m + 1/m_prev)`` (exact at a fixed point, larger when the point moves);
    - else the running per-sample variance ``history`` (NaN where there is none: no second sample of any kind).

    Args:
      previous: (b_prev, m_prev, available) from :meth:`ComponentStats.previous`, taken when the plan was made.
    """
    m = torch.as_tensor(m, dtype=b.dtype).expand_as(b).clamp_min(1)
    va0 = torch.zeros_like(b) if va is None else va
    own = w * w * va0 + (1 - w) ** 2 * vb
    prev, prev_m, prev_ok = previous
    succ = (b - prev.to(b.dtype)) ** 2 / (1 / m + 1 / prev_m.to(b.dtype).clamp_min(1))
    per_sample = torch.where(prev_ok, succ, history.to(b.dtype))
    later = w * w * va0 + (1 - w) ** 2 * per_sample / m
    if va is not None:
        cross = (1 - w) ** 2 * (a - b) ** 2 + (2 * w - 1) * va
        later = torch.where(w >= 0.5, cross, later)
    return torch.where(torch.isfinite(vb), own, later)


class Ema:
    """Per-component exponential moving average with Adam's bias correction.

    After t observations the value is Σ_i decay^(t−i) obs_i / Σ_i decay^(t−i): the plain mean of the first few
    (so no single early observation dominates), then an average over the last ~1/(1 − decay) of them.
    """

    def __init__(self, shape: torch.Size, decay: float, dtype: torch.dtype) -> None:
        self.decay = decay
        self.raw = torch.zeros(shape, dtype=dtype)
        self.count = torch.zeros(shape, dtype=torch.long)

    def update(self, obs: Tensor, mask: Tensor | None = None) -> None:
        """Fold ``obs`` in where ``mask`` (default: everywhere) and ``obs`` is finite."""
        ok = torch.isfinite(obs)
        if mask is not None:
            ok = ok & mask
        mixed = self.decay * self.raw + (1 - self.decay) * obs
        self.raw = torch.where(ok, mixed, self.raw)
        self.count = self.count + ok.long()

    @property
    def value(self) -> Tensor:
        """The bias-corrected average, ``shape`` (0 where nothing was observed)."""
        norm = 1 - torch.pow(torch.as_tensor(self.decay, dtype=self.raw.dtype), self.count.to(self.raw.dtype))
        return torch.where(self.count > 0, self.raw / norm.clamp_min(torch.finfo(norm.dtype).tiny),
                           torch.zeros_like(self.raw))

    @property
    def known(self) -> Tensor:
        return self.count > 0

    def state_dict(self) -> dict:
        return {"raw": self.raw.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.raw, self.count = state["raw"].clone(), state["count"].clone()


class ComponentStats:
    """Running variances of two estimators of one parameter's components, ``[*batch, J]`` each.

    ``first``: the variance of the always-run estimator (the score function), from its own samples.
    ``second``: the variance of the estimator run on chosen components (MVD or a second score function):

    - from its own samples wherever it had several (``second_own``, per component);
    - where it had one sample, from the difference to its estimate of the same component in the step just
      before, ``E (b_t − b_{t−1})² = σ²(1/m_t + 1/m_{t−1}) + drift²`` (``second_succ``): exact at a fixed point,
      and only consecutive steps are used so that an optimiser's drift stays small;
    - and from its difference to the independent first estimate in the same step, ``E (b − a)² = σ²_b + σ²_a``:
      one such observation buries a small σ²_b under a large σ²_a, so these are pooled over the components of a
      copy into a ratio ``σ²_b / σ²_a`` (``ratio``), used where neither of the above exists.
    """

    def __init__(self, shape: torch.Size, decay: float, dtype: torch.dtype) -> None:
        self.first = Ema(shape, decay, dtype)
        self.second_own = Ema(shape, decay, dtype)
        self.second_succ = Ema(shape, decay, dtype)
        self.ratio_num = Ema(shape[:-1], decay, dtype)
        self.ratio_den = Ema(shape[:-1], decay, dtype)
        self.last = torch.zeros(shape, dtype=dtype)
        self.last_count = torch.ones(shape, dtype=dtype)
        self.last_step = torch.full(shape, -2, dtype=torch.long)
        self.step = 0
        self._lagged = self._lagged_states()

    _LAGGED = ("second_succ",)

    def _lagged_states(self) -> dict:
        return {k: getattr(self, k).state_dict() for k in self._LAGGED}

    def lagged(self) -> ComponentStats:
        """These statistics with the successive-step average ``second_succ`` as it was *before* the latest
        estimate was folded in (everything else as it is now).

        A weight taken from them does not see ``(b_prev − b_prev2)²``, so the successive-difference variance
        ``(b − b_prev)²`` that :func:`combined_variance` reports for that weight is unbiased given it: a weight
        whose average already held that term trusts b least exactly where ``(b − b_prev)²`` is large, and the
        variance came out 0.80–1.00× the empirical one. The pooled ratio and the own-sample averages stay
        current (the ratio pools the components, so one b_prev moves it little; own samples are not b_prev's
        difference). Lagging only this average left the short InvertedPendulum runs of ``tests/rl`` as they were
        (43 of 48 seeds more than double their return, as without it); lagging everything passed 12 of 16 where
        no lag passed 15 of 16.
        """
        out = copy.copy(self)
        for k, state in self._lagged.items():
            ema = Ema(self.shape, self.first.decay, self.first.raw.dtype)
            ema.load_state_dict(state)
            setattr(out, k, ema)
        return out

    @property
    def shape(self) -> torch.Size:
        return self.first.value.shape

    def previous(self) -> tuple[Tensor, Tensor, Tensor]:
        """(the second estimator's last estimate per component, the samples behind it, whether it came from
        the latest estimate folded in), ``[*batch, J]`` each: what :func:`combined_variance` compares with."""
        return self.last.clone(), self.last_count.clone(), self.last_step == self.step

    @property
    def ratio(self) -> Tensor:
        """Pooled σ²_second / σ²_first per copy, ``[*batch, 1]`` (NaN before any observation)."""
        r = self.ratio_num.value / self.ratio_den.value.clamp_min(torch.finfo(self.ratio_den.value.dtype).tiny)
        r = torch.where(self.ratio_num.known & (self.ratio_den.value > 0), r, torch.nan)
        return r.clamp_min(0).unsqueeze(-1)

    @property
    def second_known(self) -> Tensor:
        """Where a second-estimator variance is available, ``[*batch, J]``."""
        pooled = (self.ratio_num.known & self.first.known.all(-1)).unsqueeze(-1)
        return self.second_own.known | self.second_succ.known | pooled

    def second_direct(self) -> tuple[Tensor, Tensor]:
        """σ²_second per component from its own samples and from successive steps, averaged with weights equal
        to their observation counts (each capped at the average's memory, 1/(1 − decay)); and where it exists.

        Neither source overrides the other: one own observation from two pairs (one degree of freedom) must not
        outweigh many successive-step ones.
        """
        cap = 1.0 / max(1e-12, 1.0 - self.first.decay)
        w_own = self.second_own.count.to(self.first.raw.dtype).clamp_max(cap)
        w_succ = self.second_succ.count.to(self.first.raw.dtype).clamp_max(cap)
        total = w_own + w_succ
        value = ((w_own * self.second_own.value + w_succ * self.second_succ.value)
                 / total.clamp_min(torch.finfo(total.dtype).tiny))
        return value, total > 0

    def second_variance(self) -> Tensor:
        """σ²_second per component: from its own samples and successive steps (:meth:`second_direct`), else the
        pooled ratio times σ²_first (NaN where none exists)."""
        direct, known = self.second_direct()
        return torch.where(known, direct, self.ratio * self.first.value)

    def update(self, first_var: Tensor | None, chosen: Tensor | None = None, second: Tensor | None = None,
               second_var: Tensor | None = None, first: Tensor | None = None, first_est_var: Tensor | None = None,
               unit: Tensor | float = 1.0) -> None:
        """Fold in one estimate.

        Args:
          first_var: the first estimator's variance, in the tracked unit, ``[*batch, J]`` (None: it did not run).
          chosen: mask of the components the second estimator ran on (None: it did not run).
          second: its estimates, ``[*batch, J]``.
          second_var: its own variance estimates in the tracked unit (NaN where it had one sample).
          first: the first estimator's estimates in the same step (for the pooled ratio).
          first_est_var: the first estimator's variance *of this estimate* (not in the tracked unit).
          unit: multiplies a variance of ``second``'s estimate into the tracked unit (pairs behind it, or 1).
        """
        self.step += 1
        self._lagged = self._lagged_states()
        if first_var is not None:
            self.first.update(first_var)
        if chosen is None:
            return
        own = second_var if second_var is not None else torch.full_like(second, float("nan"))
        has_own = chosen & torch.isfinite(own)
        self.second_own.update(own, has_own)
        m = torch.as_tensor(unit, dtype=second.dtype).expand_as(second).clamp_min(1)
        consecutive = chosen & ~has_own & (self.last_step == self.step - 1)
        succ = (second - self.last) ** 2 / (1 / m + 1 / self.last_count)
        self.second_succ.update(succ, consecutive)
        self.last = torch.where(chosen, second, self.last)
        self.last_count = torch.where(chosen, m, self.last_count)
        self.last_step = torch.where(chosen, torch.full_like(self.last_step, self.step), self.last_step)
        if first is None or first_var is None:
            return
        single = chosen & ~has_own
        obs = ((second - first) ** 2 - first_est_var) * unit          # E = σ²_second (tracked unit)
        obs = torch.where(single & torch.isfinite(obs), obs, torch.zeros_like(obs))
        den = torch.where(single, first_var, torch.zeros_like(first_var))
        any_single = single.any(-1)
        self.ratio_num.update(obs.sum(-1), any_single)
        self.ratio_den.update(den.sum(-1), any_single)

    _EMAS = ("first", "second_own", "second_succ", "ratio_num", "ratio_den")

    def state_dict(self) -> dict:
        out = {k: getattr(self, k).state_dict() for k in self._EMAS}
        out.update(last=self.last.clone(), last_count=self.last_count.clone(), last_step=self.last_step.clone(),
                   step=torch.tensor(self.step),
                   lagged={k: {n: t.clone() for n, t in v.items()} for k, v in self._lagged.items()})
        return out

    @classmethod
    def from_state_dict(cls, state: dict, decay: float) -> ComponentStats:
        out = cls(state["first"]["raw"].shape, decay, state["first"]["raw"].dtype)
        for k in cls._EMAS:
            getattr(out, k).load_state_dict(state[k])
        out.last, out.last_count = state["last"].clone(), state["last_count"].clone()
        out.last_step, out.step = state["last_step"].clone(), int(state["step"])
        if "lagged" in state:
            out._lagged = {k: {n: t.clone() for n, t in v.items()} for k, v in state["lagged"].items()}
        else:                           # a checkpoint written before the lagged averages existed
            out._lagged = out._lagged_states()
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

    def stats_for(self, dist, names: tuple[str, ...]) -> dict[str, ComponentStats]:
        """The running statistics of these parameters, read-only for a plan: the stored ones when they match
        the parameters and shapes, else fresh ones (not stored: only :meth:`update` changes the estimator)."""
        want = {n: torch.Size((*dist.batch_shape, dist.n_components(n))) for n in names}
        if set(self._stats) != set(names) or any(self._stats[n].shape != want[n] for n in names):
            return {n: ComponentStats(want[n], self.decay, dist.dtype) for n in names}
        return self._stats

    def claim(self, estimate) -> object:
        """The plan behind ``estimate``, checked to be this estimator's and not folded in yet, then marked as
        folded in; the statistics are (re)started if the plan's parameters or shapes differ from theirs."""
        plan = estimate.info.get("plan") if isinstance(estimate.info, dict) else None
        if plan is None or getattr(plan, "owner", None) is not self:
            raise InvalidArgumentError(f"estimate: {type(self).__name__}.update needs an estimate this estimator "
                                       "planned (from its plan's combine or its estimate); got another one")
        if plan.folded:
            raise InvalidArgumentError(f"estimate: this {type(self).__name__} plan was already folded in by "
                                       "update(); each estimate updates the running statistics once")
        plan.folded = True
        stats = self.stats_for(plan.dist, plan.names)
        if stats is not self._stats:
            self._stats = stats
        return plan
