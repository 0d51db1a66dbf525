"""``Auto``: a budget-aware estimator that splits B evaluations between the score function and per-component
MVD so as to minimise the predicted mean squared error.

It keeps running (exponentially averaged) per-component estimates of the score function's variance ×
evaluations, ``a_j`` (n evaluations give ``A_j = a_j / n``; for independent draws and, on symmetric families,
for antithetic pairs), and of one coupled MVD pair, ``b_j``. Giving component j ``m_j`` MVD pairs and combining
the two unbiased estimates with minimum-variance weights has variance

    h_j(m_j) = A_j (b_j/m_j) / (A_j + b_j/m_j)           (h_j(0) = A_j: score function alone),

so for a split ``n + 2 Σ_j m_j = B`` the predicted MSE is ``Σ_j h_j(m_j)``. For each candidate n, the best
allocation of the S = (B − n)/2 pairs is a water-filling problem: ``m_j = max(0, t √b_j − b_j/A_j)`` with t set
so that the m_j sum to S (with n = 0, pure MVD, it is the Neyman allocation ``m_j ∝ √b_j``). Auto rounds it to
integers, evaluates the predicted MSE for a grid of n, and takes the best n; a mix must beat the better pure
choice (n = B or n = 0) by ``MIX_MARGIN``, since its prediction is a minimum over noisy per-component values.

Every decision uses only earlier estimates (or, at the first estimate, independent parts of it), so every
estimate is unbiased. What the first estimates do (``_first_split``, ``_measure_mvd``, ``_cross_fitted``):

- If one pair per component leaves the score function two halves of at least 2 evaluations (4 for antithetic
  pairs), MVD gets S = max(J + min(⌈J/2⌉, ``PILOT_OWN``), B/4) pairs (at most what leaves those halves):
  ⌊S/J⌋ on every component when S ≥ 2J; else, when S − J ≥ ``ONE_PAIR_MIN_OWN``, one on every component and a
  second on S − J random ones; else two each on ⌊S/2⌋ random components (so that MVD's variance is measured
  from own pairs). The score function runs as two independent halves, combined with the pairs by cross-fitted
  weights: the weight on half 2 and on b_j comes from half 1 and the other components' own pairs only, and
  vice versa (``_cross_fitted``); a one-pair component's weight and its reported variance come from disjoint
  halves of the components with own pairs.
- If MVD cannot cover every component (B < 2J + 2, or 2J + 4 with antithetic pairs), the score function alone,
  on every estimate; on a symmetric family the first estimate is half antithetic pairs and half independent
  draws (fixed weights by evaluations), and later ones use the kind with the lower measured variance.
- Otherwise (a budget just above 2J) the score function gets what one pair per component leaves, weighed ½.
- Parameters without a score function (Uniform's ends) get their pairs evenly, at least one per component;
  parameters without a decomposition (Gamma's concentration) are estimated by the score function alone.

When the score function alone is chosen, ``explore`` of the budget still goes to MVD pairs on random components,
measured but weighed 0, while pure MVD is predicted within ``EXPLORE_WITHIN`` of it. Plans are values: ``combine`` is pure and
the running statistics change only in :meth:`Auto.update`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import find_weak_derivative
from stochgrad.errors import BudgetError, InvalidArgumentError, UnsupportedError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan, resolve_params
from stochgrad.estimators.baselines import compute_baseline
from stochgrad.estimators.hybrid import min_variance_weight
from stochgrad.estimators.measure_valued import MeasureValued
from stochgrad.estimators.running import ComponentStats, Ema, StatsMixin, combined_variance, to_components
from stochgrad.estimators.score_function import ScoreFunction, ScoreFunctionPlan

F64 = torch.float64
#: Copies on which the shared split is chosen (all copies then get their own allocation for it).
DECIDE_COPIES = 64
#: Relative predicted gain a score-function/MVD mix needs over pure MVD to be chosen. The running variances
#: behind the prediction are noisy, and the minimum over candidates of noisy predictions is biased low; with
#: tiny budgets (B = 4D at D = 2) a mix predicted 5% better measured 1.5-2.5x worse than pure MVD.
MIX_MARGIN = 0.15
#: Pseudo-observations with which a component's own MVD variance is shrunk towards the one borrowed from the
#: other components (see ``Auto._mvd_variance``).
PRIOR_OBSERVATIONS = 4.0
#: All on the score function, Auto still explores MVD when its best split is predicted within this factor.
EXPLORE_WITHIN = 1.25
#: The first estimate gives a second MVD pair to at most this many components (MVD's per-pair variance is
#: then measured from own pairs there; more would take evaluations from the score function).
PILOT_OWN = 8
#: The first estimate gives every component one MVD pair only when at least this many also get a second (their
#: own-pair variances give the one-pair components' reported variance); else two pairs each on some of them.
ONE_PAIR_MIN_OWN = 8
#: When only the score function's variances are known, this fraction of the budget measures MVD's.
MEASURE_FRACTION = 0.125


def water_fill(A: Tensor, b: Tensor, lower: Tensor, total: int | Tensor, iters: int = 14) -> Tensor:
    """Integer MVD pairs per component minimising Σ h_j(m_j) with Σ m_j = total, per copy (exactly).

    h_j is convex and decreasing in m_j, so the optimum gives every pair to the largest remaining marginal gain
    Δ_j(k) = h_j(k − 1) − h_j(k); equivalently m_j(λ) = #{k : Δ_j(k) ≥ λ} for the threshold λ at which the counts
    sum to ``total``. m_j(λ) has a closed form, so λ is found by bisection in log space and the few pairs left
    by ties go to the largest next gains.

    Args:
      A: score-function variance per component at the chosen n, ``[*batch, J]`` (``inf``: no score function).
      b: per-pair MVD variance, ``[*batch, J]`` (> 0).
      lower: least pairs per component (0 or 1), ``[*batch, J]``; ``Σ lower <= total``.
      total: pairs to hand out per copy (an int, or an int tensor broadcastable to ``[*batch]``).
    Returns:
      ``[*batch, J]`` int64 counts summing to ``total`` in every copy.
    """
    total = torch.as_tensor(total).expand(A.shape[:-1]).to(F64).unsqueeze(-1)
    pure = torch.isinf(A)
    A_ = torch.where(pure | (A <= 0), torch.ones_like(A), A)
    # The λ-free parts of count(), computed once: count() runs some 30 times per call. The same operations in
    # the same order as the plain formula (in place where that changes nothing), so the counts are bitwise equal.
    all_pure, any_pure = bool(pure.all()), bool(pure.any())
    A2, A2b4, b4 = A_ * A_, 4 * A_ * A_ * b, 4 * b
    no_sf = A <= 0
    any_no_sf = bool(no_sf.any())
    lower_f = lower.to(F64)

    def floor_count(lam: Tensor) -> Tensor:
        # With a score function: Δ(k) = A²b / ((A(k−1) + b)(Ak + b)) ≥ λ  ⇔  k ≤ (u − b)/A,
        # u = (A + √(A² + 4A²b/λ))/2. Pure MVD: h(k) = b/k, Δ(k) = b/(k(k−1)) ≥ λ  ⇔  k ≤ (1 + √(1 + 4b/λ))/2.
        # Returned as float64 integers (≤ 1e12 each, so sums over components stay exact).
        k_pure = torch.div(b4, lam).add_(1).sqrt_().add_(1).div_(2) if any_pure else None
        if all_pure:
            k = k_pure
        else:
            k = torch.div(A2b4, lam).add_(A2).sqrt_().add_(A_).div_(2).sub_(b).div_(A_)
            if any_no_sf:
                k.masked_fill_(no_sf, 0.0)
            if any_pure:
                k = torch.where(pure, k_pure, k)
        return torch.maximum(k.floor_().clamp_max_(1e12), lower_f)

    def count(lam: Tensor) -> Tensor:
        return floor_count(lam).long()

    def count_sum(lam: Tensor) -> Tensor:
        return floor_count(lam).sum(-1, keepdim=True)

    # Bracket λ around the continuous optimum λ₀ = 1/t², where m_j = max(lower_j, t√b_j − b_j/A_j) sums to
    # ``total`` (piecewise linear in t: sort the kinks), then bisect in log λ; widen where the bracket misses.
    log0 = -2 * torch.log(_continuous_t(A, b, lower, total.squeeze(-1)).clamp_min(1e-150)).unsqueeze(-1)
    log_lo, log_hi = log0 - 4.0, log0 + 4.0
    for _ in range(8):
        too_high = count_sum(log_lo.exp()) < total
        too_low = count_sum(log_hi.exp()) > total
        if not bool(too_high.any() or too_low.any()):
            break
        log_lo = torch.where(too_high, log_lo - 16.0, log_lo)
        log_hi = torch.where(too_low, log_hi + 16.0, log_hi)
    for _ in range(iters):
        mid = 0.5 * (log_lo + log_hi)
        enough = count_sum(mid.exp()) >= total
        log_lo = torch.where(enough, mid, log_lo)
        log_hi = torch.where(enough, log_hi, mid)
    m = count(log_hi.exp())                                     # Σ m <= total
    left = total.long() - m.sum(-1, keepdim=True)
    gain = _term(A, b, m) - _term(A, b, m + 1)
    order = gain.argsort(-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order))
    extra = (rank < left).long()
    over = (left - extra.sum(-1, keepdim=True)).clamp_min(0)   # only when everything is saturated
    J = m.shape[-1]
    return m + extra + over // J + (torch.arange(J) < over % J).long()


def _continuous_t(A: Tensor, b: Tensor, lower: Tensor, total: Tensor) -> Tensor:
    """The t at which Σ_j max(lower_j, t√b_j − b_j/A_j) = total (the continuous water level), ``[*batch]``."""
    sqrt_b = b.sqrt()
    offset = torch.where(torch.isfinite(A), b / A.clamp_min(torch.finfo(A.dtype).tiny), torch.zeros_like(b))
    offset = torch.where(A > 0, offset, torch.full_like(b, math.inf))
    kink = (lower + offset) / sqrt_b.clamp_min(torch.finfo(sqrt_b.dtype).tiny)
    order = kink.argsort(-1)
    k_sorted = kink.gather(-1, order)
    ok = torch.isfinite(k_sorted)
    sb = torch.where(ok, sqrt_b.gather(-1, order), 0.0)
    co = torch.where(ok, (offset + lower).gather(-1, order), 0.0)
    base_total = lower.sum(-1, keepdim=True)
    at_kink = base_total + torch.where(ok, k_sorted * (sb.cumsum(-1) - sb) - (co.cumsum(-1) - co), torch.inf)
    active = (at_kink <= total.unsqueeze(-1)).sum(-1, keepdim=True).clamp_min(1)
    B_k = sb.cumsum(-1).gather(-1, active - 1)
    C_k = co.cumsum(-1).gather(-1, active - 1)
    t = ((total.unsqueeze(-1) - base_total + C_k) / B_k.clamp_min(torch.finfo(B_k.dtype).tiny)).squeeze(-1)
    return torch.where(torch.isfinite(t) & (t > 0), t, torch.ones_like(t))


def _unless_clearly_better(counts: Tensor, b: Tensor) -> Tensor:
    """Pure MVD: keep the uneven allocation ``counts`` only where it is predicted at least MIX_MARGIN better
    than spreading the same pairs evenly (remainder to the largest b); noisy b_j alone should not unbalance it."""
    J = counts.shape[-1]
    S = counts.sum(-1, keepdim=True)
    order = b.argsort(-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(J).expand_as(order))
    even = S // J + (rank < S % J).long()
    cost = (b / counts.clamp_min(1)).sum(-1, keepdim=True)
    cost_even = (b / even.clamp_min(1)).sum(-1, keepdim=True)
    return torch.where(cost <= (1 - MIX_MARGIN) * cost_even, counts, even)


def _term(A: Tensor, b: Tensor, m: Tensor) -> Tensor:
    """h_j(m_j): the predicted variance of component j with m_j MVD pairs, elementwise."""
    mf = m.to(F64)
    with_mvd = A * b / (A * mf + b)
    pure = b / mf.clamp_min(1)
    return torch.where(m > 0, torch.where(torch.isfinite(A), with_mvd, pure), A)


def predicted_mse(A: Tensor, b: Tensor, m: Tensor) -> Tensor:
    """Σ_j h_j(m_j) per copy, ``[*batch]``."""
    return _term(A, b, m).sum(-1)


def slots(counts: Tensor) -> Tensor:
    """Component index of each pair, ``[*batch, S]``, from counts ``[*batch, J]`` with the same sum S."""
    S = int(counts.sum(-1).flatten()[0])
    ends = counts.cumsum(-1)
    s = torch.arange(S).expand(*counts.shape[:-1], S).contiguous()
    return torch.searchsorted(ends.contiguous(), s, right=True)


def _grid(budget: int) -> list[int]:
    """Candidate numbers of score-function samples: 0, the budget, and a geometric grid between, each with
    an even remainder so that no evaluation is left over."""
    out, k = {0, budget}, 2
    while k < budget:
        out.add(k + (budget - k) % 2)
        k = max(k + 1, int(k * 1.4))
    return sorted(x for x in out if (x == 0 or x >= 2) and x <= budget)


class Auto(StatsMixin, Estimator):
    """A budget of B evaluations per estimate, split between score function and MVD by predicted MSE.

    Args:
      budget: B, evaluations of f per estimate.
      decay: of the running variance averages.
      explore: fraction of the MVD pairs given to random components (and of the budget, when the score
        function alone is chosen and MVD is predicted within ``EXPLORE_WITHIN`` of it).

    Attributes:
      last_decision: ``{"n_sf": n, "pairs": {param: pairs}, "predicted_mse": …, "antithetic": …}`` of the
        latest estimate folded in by :meth:`update` (each plan's own is in ``estimate.info["decision"]``).

    Example::

        est = Auto(budget=40)
        for step in range(100):
            g = est.estimate(f, dist, generator=gen)      # learns where MVD pays as it goes
    """

    def __init__(self, budget: int, decay: float = 0.9, explore: float = 0.05) -> None:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 2:
            raise BudgetError(f"budget: Auto needs at least 2 evaluations per estimate; got {budget!r}")
        if not 0.0 <= decay < 1.0:
            raise InvalidArgumentError(f"decay: must be in [0, 1); got {decay}")
        if not 0.0 <= explore <= 1.0:
            raise InvalidArgumentError(f"explore: must be in [0, 1]; got {explore}")
        self.budget, self.decay, self.explore = budget, decay, explore
        self._stats: dict[str, ComponentStats] = {}
        self._anti: dict[str, Ema] = {}
        self.last_decision: dict | None = None

    def reset(self) -> None:
        super().reset()
        self._anti = {}
        self.last_decision = None

    def state_dict(self) -> dict:
        """Running statistics, for checkpoints (tensors only: loadable with ``weights_only=True``)."""
        out = super().state_dict()
        if self._anti:
            out["antithetic"] = {p: e.state_dict() for p, e in self._anti.items()}
        return out

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        anti = state.pop("antithetic", {})
        super().load_state_dict(state)
        self._anti = {}
        for p, e in anti.items():
            self._anti[p] = Ema(e["raw"].shape, self.decay, e["raw"].dtype)
            self._anti[p].load_state_dict(e)

    def _antithetic_variance(self, stats: dict[str, ComponentStats], names: Sequence[str]) -> dict[str, Tensor] | None:
        """Per-evaluation variance of antithetic score-function pairs (variance × evaluations), or None where
        it is not known for every component of ``names`` (or belongs to other statistics)."""
        if stats is not self._stats or any(p not in self._anti for p in names):
            return None
        if not all(bool(self._anti[p].known.all()) for p in names):
            return None
        return {p: self._anti[p].value for p in names}

    # -- budget -------------------------------------------------------------------------------------------
    @staticmethod
    def minimum_budget(dist: Family, names: Sequence[str]) -> int:
        """The smallest budget Auto can work with: one MVD pair per component of the parameters only MVD
        supports, plus 2 (a leave-one-out score function) if any parameter needs the score function."""
        forced = [n for n in names if not dist.has_valid_score(n)]
        need = 2 * sum(dist.n_components(n) for n in forced)
        return need if len(forced) == len(names) else need + 2

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        names = resolve_params(dist, params)
        if all(not dist.has_valid_score(n) for n in names):
            return self.budget - self.budget % 2
        return self.budget

    # -- deciding ----------------------------------------------------------------------------------------
    @staticmethod
    def _mvd_variance(st: ComponentStats) -> Tensor:
        """Running per-pair MVD variance ``[*batch, J]`` (> 0, or NaN for a copy with no MVD history at all).

        A component without an estimate of its own borrows the MVD/score-function variance ratio times its
        score-function variance: the larger of the mean ratio over the components that have an estimate and the
        ratio pooled from the differences to the score function (used only if positive: it is a difference of
        noisy terms and can come out at or below zero, which must not make a component look free); else the
        mean of the other components' MVD variances. All of these scale with f², so the decisions are scale-equivariant.

        A component's own estimate is an average of a few one-degree-of-freedom terms (χ²₁: a tenth of them
        come out below 1/60 of the truth), so it is shrunk towards the borrowed value with the weight of
        ``PRIOR_OBSERVATIONS`` observations: otherwise the components that look cheapest by chance get the pairs
        and the weight, and the estimate is worse than either estimator alone."""
        a = st.first.value.to(F64)
        own, own_known = st.second_direct()
        own = own.to(F64)
        cap = 1.0 / max(1e-12, 1.0 - st.first.decay)
        k = st.second_own.count.to(F64).clamp_max(cap) + st.second_succ.count.to(F64).clamp_max(cap)
        has_a = st.first.known & (a > 0)
        ratio_own = torch.where(own_known & has_a, own / a.clamp_min(torch.finfo(a.dtype).tiny), torch.nan)
        # the mean, not the median: each ratio is a few χ²₁ terms, whose median is less than half their mean
        mean_ratio = ratio_own.nanmean(-1, keepdim=True)
        pooled = st.ratio.to(F64)
        # the own-pair ratio where there is one: the pooled ratio is a difference of terms dominated by the
        # score function's variance, far too noisy to take a maximum with (measured: at D = 10 it sent Auto
        # to the score function alone where MVD was 2x better)
        ratio = torch.where(torch.isfinite(mean_ratio), mean_ratio, pooled)
        mean_b = torch.where(own_known, own, torch.nan).nanmean(-1, keepdim=True).expand_as(a)
        prior = torch.where(torch.isfinite(ratio) & (ratio > 0) & has_a, ratio * a, mean_b)
        shrunk = torch.where(torch.isfinite(prior),
                             (k * own + PRIOR_OBSERVATIONS * prior) / (k + PRIOR_OBSERVATIONS), own)
        v = torch.where(own_known, shrunk, prior)
        v = torch.maximum(v, 1e-9 * a.clamp_min(0))        # keeps the water-filling's counts finite
        return torch.where(torch.isfinite(v), v.clamp_min(torch.finfo(v.dtype).tiny), torch.nan)

    def _decide(self, stats: dict[str, ComponentStats], dist: Family, names: tuple[str, ...], sf_names: list[str],
                mvd_names: list[str], generator: torch.Generator | None, antithetic: bool,
                sf_var: dict[str, Tensor] | None) -> tuple[int, dict[str, Tensor], dict]:
        """Evaluate every candidate n at once: one batched water-fill over the components of all parameters.

        ``sf_var``: the score function's variance × evaluations per component for the chosen kind of samples
        (antithetic pairs or independent draws); None: the independent draws' running variance."""
        B = self.budget
        first_known = all(bool(stats[p].first.known.all()) for p in sf_names)
        second_known = all(bool(stats[p].second_known.any()) for p in mvd_names)
        forced_any = any(p not in sf_names for p in mvd_names)
        least = 4 if antithetic else 2
        if sf_names and not forced_any and B - 2 * sum(dist.n_components(p) for p in mvd_names) < least:
            # MVD cannot cover every component (B < 2J + 2): the score function alone. A mix could still
            # help a few components, but measuring MVD's variances costs evaluations that, at this budget,
            # the score function needs on every component (measured: 1.03-1.17x sf-loo when it did).
            n = B - B % 2 if antithetic else B
            return n, {}, {"n_sf": n, "pairs": {}, "predicted_mse": None, "sf_only": True}
        if not first_known or (not second_known and (forced_any or not sf_names)):
            return self._first_split(dist, names, sf_names, mvd_names, generator, antithetic)
        if not second_known:
            return self._measure_mvd(dist, sf_names, mvd_names, generator, antithetic)
        sizes = [dist.n_components(p) for p in mvd_names]
        pure_ok = set(mvd_names) == set(names) and B // 2 >= sum(sizes)
        forced_pairs = sum(dist.n_components(p) for p in mvd_names if p not in sf_names)
        ns = [n for n in _grid(B) if (n > 0 and sf_names and (B - n) // 2 >= forced_pairs) or (n == 0 and pure_ok)]
        if antithetic:
            ns = [n for n in ns if n == 0 or (n % 2 == 0 and n >= 4)]
        if not ns:
            return self._first_split(dist, names, sf_names, mvd_names, generator, antithetic)
        G = len(ns)
        bview = (G, *([1] * (len(dist.batch_shape) + 1)))
        n_t = torch.tensor(ns, dtype=F64).reshape(bview)
        a = {p: (sf_var[p] if sf_var is not None and p in sf_var else stats[p].first.value).to(F64) for p in names}

        def A_of(p: str) -> Tensor:                                        # [G, *batch, J_p]
            if p in sf_names:
                return torch.where(n_t > 0, a[p] / n_t.clamp_min(1), torch.full_like(n_t, math.inf))
            return torch.full((G, *a[p].shape), math.inf, dtype=F64)

        # The split n is shared by all copies: choose it on at most DECIDE_COPIES of them, then allocate
        # every copy's pairs for that n only.
        n_copies = dist.batch_shape.numel()
        sub = slice(None) if n_copies <= DECIDE_COPIES else slice(0, DECIDE_COPIES)

        def flat(t: Tensor) -> Tensor:                                     # [G?, *batch, J] -> [G?, copies, J]
            return t.reshape(*t.shape[: t.dim() - len(dist.batch_shape) - 1], n_copies, t.shape[-1])

        b_of = {p: self._mvd_variance(stats[p]) for p in mvd_names}                # [*batch, J_p], computed once
        # a copy without any MVD history yet (NaN) decides as if MVD were as noisy as the score function
        b_of = {p: torch.where(torch.isfinite(v), v, a[p].clamp_min(torch.finfo(a[p].dtype).tiny))
                for p, v in b_of.items()}
        cost = torch.zeros((G, min(n_copies, DECIDE_COPIES)), dtype=F64)
        for p in names:
            if p not in mvd_names:
                cost = cost + flat(A_of(p).expand(G, *a[p].shape))[:, sub].sum(-1)   # score function only
        if mvd_names:
            A = torch.cat([flat(A_of(p).expand(G, *a[p].shape))[:, sub] for p in mvd_names], -1)
            b = torch.cat([flat(b_of[p])[sub] for p in mvd_names], -1).expand_as(A)
            lower = torch.isinf(A).to(F64)
            S = torch.tensor([(B - n) // 2 for n in ns]).reshape(G, 1)
            cost = cost + predicted_mse(A, b, water_fill(A, b, lower, S))
        mean_cost = cost.mean(-1)
        # Compare candidates by the median over copies of their cost relative to each copy's best, so that a
        # few copies with wildly misestimated variances cannot decide for all.
        regret = (cost / cost.min(0).values.clamp_min(torch.finfo(cost.dtype).tiny)).median(-1).values
        i = int(regret.argmin())
        # A mix must clearly beat the better pure choice (all on the score function, or all on MVD): its
        # prediction is the minimum over allocations of noisy per-component variances, biased low; the pure
        # choices' predictions are sums over all components.
        pure = [k for k, n in enumerate(ns) if n in (0, B)]
        if pure and i not in pure:
            best_pure = min(pure, key=lambda k: float(regret[k]))
            if float(regret[i]) > (1 - MIX_MARGIN) * float(regret[best_pure]):
                i = best_pure
        n = ns[i]
        counts: dict[str, Tensor] = {}
        if mvd_names:
            A_i = torch.cat([A_of(p)[i].expand(a[p].shape) for p in mvd_names], -1)
            b_i = torch.cat([b_of[p] for p in mvd_names], -1)
            counts_all = water_fill(A_i, b_i, torch.isinf(A_i).to(F64), (B - n) // 2)
            if n == 0:
                counts_all = _unless_clearly_better(counts_all, b_i)
            parts = counts_all.split(sizes, -1)
            if dist.batch_shape.numel() == 1 or len(mvd_names) == 1:
                counts = dict(zip(mvd_names, parts))
            else:
                # Copies may split the pairs differently between parameters; the plan needs one split, so
                # round the average and re-allocate each parameter within its share.
                S_i = (B - n) // 2
                share = [int(round(float(c.sum(-1).to(F64).mean()))) for c in parts]
                lows = [int(dist.n_components(p)) if p not in sf_names or n == 0 else 0 for p in mvd_names]
                share = [max(x, lo) for x, lo in zip(share, lows)]
                share[int(torch.tensor(share).argmax())] += S_i - sum(share)
                A_i = {p: A_of(p)[i].expand(a[p].shape) for p in mvd_names}
                for p, s_p in zip(mvd_names, share):
                    lo = torch.isinf(A_i[p]).to(F64)
                    counts[p] = (water_fill(A_i[p], b_of[p], lo, s_p) if s_p > 0
                                 else torch.zeros_like(a[p], dtype=torch.long))
        # Explore only while pure MVD (its prediction is a sum over all components, not a minimum over noisy
        # allocations) is predicted within EXPLORE_WITHIN of the choice: a mix with a few pairs is always
        # predicted close to the score function alone, so comparing with mixes would explore for ever.
        measure_only = False
        close = bool(0 in ns) and float(regret[ns.index(0)]) <= EXPLORE_WITHIN * float(regret[i])
        if n == B and self.explore > 0 and mvd_names and close:
            # All on the score function, but MVD predicted not far behind: still spend about ``explore`` of the
            # budget on MVD pairs on random components (stochastic rounding), so that its variances stay
            # measured. Where MVD is predicted far worse, measuring it more is not worth the evaluations.
            # These pairs are measured but weighed 0: their weight would rest on the variances they are there
            # to measure (measured: on a heavy-tailed f, one such pair weighed ½ cost 20x on an estimate).
            measure_only = True
            u = float(torch.rand((), generator=generator, dtype=F64))
            e = math.floor(self.explore * B / 2 + u)
            e = min(e, (B - (4 if antithetic else 2)) // 2)
            if e > 0:
                n = B - 2 * e
                p0 = mvd_names[0]
                r = torch.rand((*dist.batch_shape, e, dist.n_components(p0)), generator=generator).argmax(-1)
                c = torch.zeros((*dist.batch_shape, dist.n_components(p0)), dtype=torch.long)
                counts[p0] = c.scatter_add_(-1, r, torch.ones_like(r))
        elif n > 0 and self.explore > 0:   # only where the score function covers a component left without pairs
            counts = {p: (self._explore({p: c}, generator)[p] if p in sf_names else c) for p, c in counts.items()}
        decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                    "predicted_mse": float(mean_cost[i])}
        if measure_only and any(int(c.sum(-1).flatten()[0]) > 0 for c in counts.values()):
            decision["measure_only"] = True
        return n, counts, decision

    def _measure_mvd(self, dist, sf_names, mvd_names, generator, antithetic):
        """Only the score function's variances known (its first estimates had the whole budget): give
        ``MEASURE_FRACTION`` of the budget (at least one pair) to MVD pairs, two each on random components when
        there are two or more (so that MVD's variance is measured from a component's own pairs), to measure
        MVD's variances; the plan weighs them 0 (they are not used in this estimate, so nothing depends on
        unknown variances)."""
        B = self.budget
        least = 4 if antithetic else 2
        p0 = mvd_names[0]
        J = dist.n_components(p0)
        e = min(max(1, int(MEASURE_FRACTION * B / 2)), (B - least) // 2)
        comps = min(J, e // 2) if e >= 2 else 0
        counts = {}
        if comps > 0:
            r = torch.rand((*dist.batch_shape, J), generator=generator).argsort(-1)[..., :comps]
            c = torch.zeros((*dist.batch_shape, J), dtype=torch.long)
            counts[p0] = c.scatter_(-1, r, 2)
        elif e > 0:
            r = torch.rand((*dist.batch_shape, e, J), generator=generator).argmax(-1)
            c = torch.zeros((*dist.batch_shape, J), dtype=torch.long)
            counts[p0] = c.scatter_add_(-1, r, torch.ones_like(r))
        n = B - 2 * sum(int(c.sum(-1).flatten()[0]) for c in counts.values())
        decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                    "predicted_mse": None, "measure_only": True}
        return n, counts, decision

    def _explore(self, counts: dict[str, Tensor], generator: torch.Generator | None) -> dict[str, Tensor]:
        """Move ``explore`` of each parameter's pairs (on average) from the most-served components to random ones."""
        out = {}
        for p, c in counts.items():
            S = int(c.sum(-1).flatten()[0])
            # Stochastic rounding: with few pairs, a pair is still moved in about explore·S of the estimates.
            u = float(torch.rand((), generator=generator, dtype=F64))
            e = int(math.floor(self.explore * S + u))
            if e == 0:
                out[p] = c
                continue
            c = c.clone()
            for _ in range(e):
                c.scatter_add_(-1, c.argmax(-1, keepdim=True), -torch.ones_like(c[..., :1]))
            r = torch.rand((*c.shape[:-1], e, c.shape[-1]), generator=generator).argmax(-1)
            out[p] = c.scatter_add_(-1, r, torch.ones_like(r))
        return out

    def _first_split(self, dist, names, sf_names, mvd_names, generator, antithetic: bool = False):
        """The first estimate (no history): the pilot's pairs (see the module docstring), the rest on the score
        function as two halves combined by cross-fitted weights (``_cross_fitted``). Parameters without a
        score function get their pairs evenly (at least one each)."""
        B = self.budget
        J = {p: dist.n_components(p) for p in names}
        forced = [p for p in mvd_names if p not in sf_names]
        full = 2 * sum(J[p] for p in mvd_names)
        least = 4 if antithetic else 2
        n_comp = full // 2
        # The pilot's pairs: at least one per component and a second on half of them (so that MVD's per-pair
        # variance is measured from own pairs), and at least a quarter of the budget; the score function
        # keeps the rest (at least two halves of ``least``).
        pilot_pairs = min(max(n_comp + min((n_comp + 1) // 2, PILOT_OWN), B // 4), (B - 2 * least) // 2)
        if not sf_names:
            n = 0
        elif B - full >= 2 * least and not forced:
            n = B - 2 * max(n_comp, pilot_pairs)
        elif B - full >= least:
            n = B - full
        elif not forced:
            n = B - B % 2 if antithetic else B    # the score function alone; MVD is measured next
        else:
            n = max(least, (B - 2 * sum(J[p] for p in forced)) // 2)
        if antithetic and n % 2:
            n += 1 if B - n - 1 >= 2 * sum(J[p] for p in forced) and (B - n - 1) % 2 == 0 else -1
        S = (B - n) // 2
        counts = {}
        free = [p for p in mvd_names if p not in forced]
        left = S - sum(J[p] for p in forced)
        if sf_names and not forced and S >= n_comp:
            # Every component gets S // J pairs and a random S % J of them one more: both estimators cover
            # every component, with own-pair MVD variances on the components with two or more.
            left_p, shares = S, []
            for i, p in enumerate(mvd_names):
                s_p = left_p if i == len(mvd_names) - 1 else S * J[p] // n_comp
                shares.append(s_p)
                left_p -= s_p
            for p, s_p in zip(mvd_names, shares):
                r = torch.rand((*dist.batch_shape, J[p]), generator=generator).argsort(-1)
                if s_p >= 2 * J[p]:
                    c = torch.full((*dist.batch_shape, J[p]), s_p // J[p], dtype=torch.long)
                    counts[p] = c.scatter_add_(-1, r[..., : s_p % J[p]], torch.ones_like(r[..., : s_p % J[p]]))
                elif s_p - J[p] >= ONE_PAIR_MIN_OWN:
                    # one pair on every component (both estimators cover all of them: a component left to the
                    # score function alone costs up to 16x there where MVD wins) and a second pair on s_p − J
                    # random ones, whose own-pair variances give the others' MVD variance (``_cross_fitted``)
                    c = torch.ones((*dist.batch_shape, J[p]), dtype=torch.long)
                    extra = r[..., : s_p - J[p]]
                    counts[p] = c.scatter_add_(-1, extra, torch.ones_like(extra))
                else:
                    # two each on s_p // 2 components (one more on another if s_p is odd): with too few
                    # components with own variances, a one-pair component's borrowed variance is too noisy to
                    # report (measured 0.67-0.80x the true variance of the estimate at D = 4)
                    c = torch.zeros((*dist.batch_shape, J[p]), dtype=torch.long)
                    c.scatter_(-1, r[..., : s_p // 2], 2)
                    if s_p % 2:
                        c.scatter_(-1, r[..., s_p // 2: s_p // 2 + 1], 1)
                    counts[p] = c
            decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                        "predicted_mse": None, "pilot": True}
            return n, counts, decision
        for p in mvd_names:
            c = torch.zeros((*dist.batch_shape, J[p]), dtype=torch.long)
            if p in forced:
                c += 1
            counts[p] = c
        if left > 0 and free + forced:
            pool = free or forced
            per = [left // len(pool) + (1 if i < left % len(pool) else 0) for i in range(len(pool))]
            for p, s_p in zip(pool, per):
                if not free:                 # MVD only: spread evenly, so that components get two pairs
                    counts[p] += s_p // J[p]
                    s_p %= J[p]
                r = torch.rand((*dist.batch_shape, J[p]), generator=generator).argsort(-1)[..., :s_p] \
                    if not free else torch.rand((*dist.batch_shape, s_p, J[p]), generator=generator).argmax(-1)
                counts[p].scatter_add_(-1, r, torch.ones_like(r))
        counts = {p: c for p, c in counts.items() if int(c.sum(-1).flatten()[0]) > 0}
        decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                    "predicted_mse": None}
        return n, counts, decision

    # -- plan / combine -----------------------------------------------------------------------------------
    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> AutoPlan:
        names = resolve_params(dist, params)
        sf_names = [p for p in names if dist.has_valid_score(p)]   # not at a boundary (Bernoulli probs 0, 1)
        mvd_names = [p for p in names if find_weak_derivative(type(dist), p) is not None]
        for p in names:
            if p not in sf_names and p not in mvd_names:
                raise UnsupportedError(f"Auto: {type(dist).__name__}.{p} has neither a score function nor a "
                                       "measure-valued derivative; use Pathwise")
        need = self.minimum_budget(dist, names)
        if self.budget < need:
            raise BudgetError(f"budget: Auto needs at least {need} evaluations per estimate for "
                              f"{type(dist).__name__} {list(names)}; got {self.budget}")
        dist = dist.detach()
        stats = self.stats_for(dist, names)
        # Antithetic pairs (x, 2μ − x) measure both their own variance and that of independent draws (from
        # the marginal terms), so they are the first estimate's and then whichever is predicted lower.
        antithetic = bool(dist.symmetric and sf_names and self.budget % 2 == 0 and self.budget >= 4)
        anti_var = self._antithetic_variance(stats, sf_names) if antithetic else None
        if antithetic and anti_var is not None and all(bool(stats[p].first.known.all()) for p in sf_names):
            plain = sum(stats[p].first.value.to(F64).sum(-1) for p in sf_names)
            anti = sum(anti_var[p].to(F64).sum(-1) for p in sf_names)
            # totals over the copies, not a vote: each copy's antithetic variance may rest on a few pairs, and
            # a few-degree-of-freedom estimate is below its mean in most copies
            antithetic = bool(anti.sum() < plain.sum())
        n, counts, decision = self._decide(stats, dist, names, sf_names, mvd_names, generator, antithetic,
                                           anti_var if antithetic else None)
        antithetic = antithetic and n >= 4 and n % 2 == 0
        decision["antithetic"] = antithetic
        counts = {p: c for p, c in counts.items() if int(c.sum(-1).flatten()[0]) > 0}
        weights_a, var_b, previous = {}, {}, {}
        for p in counts:
            st = stats[p]
            b = self._mvd_variance(st) / counts[p].clamp_min(1)
            known_b = st.second_known
            # per pair, from history: the component's own, else borrowed from the other components (NaN only
            # without any MVD history in the copy)
            var_b[p] = self._mvd_variance(st)
            previous[p] = st.previous()
            if p in sf_names and n > 0:
                a = anti_var[p] if antithetic and anti_var is not None else st.first.value
                w = min_variance_weight(a.to(F64) / n, b)
                # no history at all: ½, ½; the score function's variance known but not MVD's: MVD unused
                fallback = torch.where(st.first.known, 1.0, 0.5).to(w.dtype)
                w = torch.where(st.first.known & known_b, w, fallback)
                weights_a[p] = torch.ones_like(w) if decision.get("measure_only") else w
        unit = 2 if antithetic else 1
        n_half = unit * (n // (2 * unit))
        n_anti = 2 * (n // 4)
        if decision.get("sf_only") and antithetic and anti_var is None and n_anti >= 4 and n - n_anti >= 2:
            # The first estimate on a symmetric family without MVD: half antithetic pairs, half independent
            # draws, averaged by evaluations (fixed weights), so that both kinds' variances are measured
            # and the next estimates use the better one.
            decision["antithetic"], decision["kinds"] = False, "antithetic+independent"
            sf_plan = HalvesPlan(dist, [ScoreFunction(n_anti, baseline="loo", antithetic=True).plan(
                dist, generator, sf_names), ScoreFunction(n - n_anti, baseline="loo").plan(dist, generator, sf_names)])
        elif decision.get("pilot") and n_half >= 2 * unit:
            sf_plan = HalvesPlan(dist, [ScoreFunction(k, baseline="loo", antithetic=antithetic).plan(
                dist, generator, sf_names) for k in (n_half, n - n_half)])
        else:
            decision.pop("pilot", None)
            sf_plan = (ScoreFunction(n, baseline="loo", antithetic=antithetic).plan(dist, generator, sf_names)
                       if n >= 2 else None)
        dims = {p: slots(c) for p, c in counts.items()}
        mvd_plan = MeasureValued(1, coupled=True, dims=dims).plan(dist, generator, list(dims)) if dims else None
        return AutoPlan(self, dist, names, counts, sf_plan, mvd_plan, n, weights_a, var_b, previous, decision)

    def update(self, estimate: GradientEstimate) -> None:
        """Fold one estimate (of a plan of this estimator) into the running variances; once per estimate."""
        plan = self.claim(estimate)
        g1, g2, dist = estimate.info["first"], estimate.info["second"], plan.dist
        self.last_decision = dict(plan.decision)
        anti = bool(plan.decision.get("antithetic"))
        mixed = plan.decision.get("kinds") == "antithetic+independent"
        for p in plan.names:
            has_sf = g1 is not None and p in g1.grad
            first = to_components(g1.variance[p], dist, p) * plan.n_sf if has_sf else None   # per sample
            if has_sf and mixed:
                # half 1 antithetic pairs, half 2 independent draws: each kind's variance × evaluations;
                # the independent draws' also from half 1's marginal terms, pooled by evaluations
                (h1, h2), (v1, v2) = plan.sf_plan.halves, g1.values.split(plan.sf_plan.sizes, 0)
                a1, a2 = g1.info["halves"]
                anti_v = to_components(a1.variance[p], dist, p) * h1.n_evals
                if p not in self._anti or self._anti[p].raw.shape != anti_v.shape:
                    self._anti[p] = Ema(anti_v.shape, self.decay, anti_v.dtype)
                self._anti[p].update(anti_v)
                marginal = to_components(_marginal_variance(h1, v1, p), dist, p).to(anti_v.dtype)
                own = to_components(a2.variance[p], dist, p) * h2.n_evals
                first = (h1.n_evals * marginal + h2.n_evals * own) / plan.n_sf
            elif has_sf and anti:
                # variance × evaluations of antithetic pairs; independent draws' from the marginal terms
                if p not in self._anti or self._anti[p].raw.shape != first.shape:
                    self._anti[p] = Ema(first.shape, self.decay, first.dtype)
                self._anti[p].update(first)
                halves = plan.sf_plan.halves if isinstance(plan.sf_plan, HalvesPlan) else [plan.sf_plan]
                values = g1.values.split([h.n_evals for h in halves], 0)
                marginal = sum(_marginal_variance(h, v, p) * h.n_evals for h, v in zip(halves, values)) / plan.n_sf
                first = to_components(marginal, dist, p).to(first.dtype)
            if g2 is None or p not in plan.counts:
                self._stats[p].update(first, None, None, None)
                continue
            c = plan.counts[p]
            b = to_components(g2.grad[p], dist, p)
            vb = to_components(g2.variance[p], dist, p) * c          # per pair (NaN where a component had one pair)
            if has_sf:
                self._stats[p].update(first, c > 0, b, vb, first=to_components(g1.grad[p], dist, p),
                                      first_est_var=to_components(g1.variance[p], dist, p), unit=c)
            else:
                self._stats[p].update(None, c > 0, b, vb)


class AutoPlan(Plan):
    """The points of one Auto estimate: the split, the weights and the history-based MVD variances are fixed
    when the plan is made, so ``combine`` is a pure function of the plan and the values."""

    def __init__(self, owner: Auto, dist: Family, names: tuple[str, ...], counts: dict[str, Tensor],
                 sf_plan: Plan | None, mvd_plan: Plan | None, n_sf: int, weights_a: dict[str, Tensor],
                 var_b: dict[str, Tensor], previous: dict[str, tuple[Tensor, Tensor, Tensor]],
                 decision: dict) -> None:
        self.owner, self.dist, self.names, self.counts = owner, dist, names, counts
        self.sf_plan, self.mvd_plan, self.n_sf, self.weights_a = sf_plan, mvd_plan, n_sf, weights_a
        self.var_b, self.previous, self.decision, self.folded = var_b, previous, decision, False
        parts = [p.points for p in (sf_plan, mvd_plan) if p is not None]
        self.points = torch.cat([parts[0]] + [p.to(parts[0].dtype) for p in parts[1:]], 0)

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        dist = self.dist
        n1 = self.sf_plan.n_evals if self.sf_plan is not None else 0
        g1 = self.sf_plan.combine(values[:n1]) if self.sf_plan is not None else None
        g2 = self.mvd_plan.combine(values[n1:]) if self.mvd_plan is not None else None
        grad, var, weights = {}, {}, dict(self.weights_a)
        for p in self.names:
            has_sf = g1 is not None and p in g1.grad
            has_mvd = g2 is not None and p in g2.grad
            shape = dist.param(p).shape
            if not has_sf:
                b, vb = to_components(g2.grad[p], dist, p), to_components(g2.variance[p], dist, p)
                v = combined_variance(torch.zeros_like(b), b, None, b, vb, self.counts[p], self.previous[p],
                                      self.var_b[p])
                grad[p], var[p] = g2.grad[p], v.reshape(shape)
                continue
            if not has_mvd:
                grad[p], var[p] = g1.grad[p], g1.variance[p]
                continue
            a, va = to_components(g1.grad[p], dist, p), to_components(g1.variance[p], dist, p)
            b, vb = to_components(g2.grad[p], dist, p), to_components(g2.variance[p], dist, p)
            if isinstance(self.sf_plan, HalvesPlan):
                halves = [(to_components(h.grad[p], dist, p), to_components(h.variance[p], dist, p), n_h)
                          for h, n_h in zip(g1.info["halves"], self.sf_plan.sizes)]
                g, v, w = _cross_fitted(halves, b, vb, self.counts[p])
                grad[p], var[p], weights[p] = g.reshape(shape), v.reshape(shape), w
                continue
            served = self.counts[p] > 0
            w = torch.where(served, self.weights_a[p].to(a.dtype), torch.ones_like(a))
            grad[p] = (w * a + (1 - w) * torch.where(served, b, torch.zeros_like(b))).reshape(shape)
            v = combined_variance(w, a, va, b, vb, self.counts[p], self.previous[p], self.var_b[p])
            var[p] = torch.where(served, v, va).reshape(shape)
        value = g1.value if g1 is not None else g2.value
        info = {"decision": dict(self.decision), "pairs": self.counts, "weight_sf": weights,
                "first": g1, "second": g2, "plan": self}
        return GradientEstimate(grad, var, value, self.n_evals, values, None, info)


def _marginal_variance(plan: ScoreFunctionPlan, values: Tensor, name: str) -> Tensor:
    """Variance of one score-function term ``(f − b)·s`` of independent draws, from antithetic pairs: each
    point is a draw from p_θ, so the terms' sample variance estimates it (the pairs' correlation biases it by
    O(1/N)). ``[*batch, *components]``."""
    s = plan.dist.score(plan.points, name)
    b = compute_baseline(plan.baseline, values, values, plan.pair_of)
    w = values - b
    h = w.reshape(*w.shape, *([1] * (s.dim() - w.dim()))) * s
    return h.var(0)


class HalvesPlan(Plan):
    """Two independent score-function plans whose estimates are averaged (weighted by their evaluations), for
    Auto's first estimate; ``info["halves"]`` keeps both estimates."""

    def __init__(self, dist: Family, halves: list[Plan]) -> None:
        self.dist, self.halves = dist, halves
        self.sizes = [h.n_evals for h in halves]
        self.points = torch.cat([h.points for h in halves], 0)

    def _combine(self, values: Tensor) -> GradientEstimate:
        parts = [h.combine(v) for h, v in zip(self.halves, values.split(self.sizes, 0))]
        n = sum(self.sizes)
        share = [k / n for k in self.sizes]
        grad = {p: sum(s * g.grad[p] for s, g in zip(share, parts)) for p in parts[0].grad}
        var = {p: sum(s * s * g.variance[p] for s, g in zip(share, parts)) for p in parts[0].grad}
        value = sum(s * g.value for s, g in zip(share, parts))
        return GradientEstimate(grad, var, value, self.n_evals, values, None, {"halves": parts})


def _half_weights(halves: list[tuple[Tensor, Tensor, int]], b: Tensor, vb: Tensor, m: Tensor, own: Tensor,
                  use: Tensor) -> tuple[Tensor, Tensor]:
    """The weights on the score function (w₁ from half 1, applied to a₂; w₂ from half 2), ``[*batch, J]`` each:
    component j's from the MVD/score-function variance ratio of the components in ``use`` other than j."""
    tiny = torch.finfo(vb.dtype).tiny
    (a1, va1, n1), (a2, va2, n2) = halves
    out = []
    for a_h, va_h, n_h, n_other in ((a1, va1, n1, n2), (a2, va2, n2, n1)):
        # MVD's per-pair variance per component from its own pairs, else from its difference to this half
        # (E (b − a_h)² = Var b + Var a_h); the other half's variance predicted from this half's samples
        vb_est = torch.where(own, vb, (b - a_h) ** 2 - va_h) * m
        vb_est = torch.where(use, vb_est, torch.zeros_like(vb))
        va_other = torch.where(use, va_h * n_h / n_other, torch.zeros_like(vb))
        r_pair = ((vb_est.sum(-1, keepdim=True) - vb_est)
                  / (va_other.sum(-1, keepdim=True) - va_other).clamp_min(tiny)).clamp_min(0)
        r = r_pair / m                                     # of component j's m_j pairs
        cnt = use.sum(-1, keepdim=True) - use.long()
        out.append(torch.where(cnt > 0, 1 - 1 / (1 + r), torch.full_like(r, 0.5)))   # r/(1 + r), also for r = inf
    return out[0], out[1]


def _cross_fitted(halves: list[tuple[Tensor, Tensor, int]], b: Tensor, vb: Tensor,
                  pairs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The first estimate's combination, with data-driven weights that keep it unbiased (cross-fitting).

    The score function ran as two independent halves (a₁, a₂); MVD gave ``pairs`` pairs to the components (b,
    its own variance vb where a component had two or more). For a component j with pairs, the weight applied to
    a₂ and b is computed from half 1 and from the *other* components only: the per-pair MVD/score-function
    variance ratio ``r = Σ_{k≠j} m_k vb_k / Σ_{k≠j} Var a_k`` over the components with own variances (over all
    with pairs, from ``(b_k − a_k)² − var a_k``, if none has; Var a_k predicted for the other half from this
    half's samples), ``r_j = r / m_j`` and ``w = r_j/(1 + r_j)`` (the minimum-variance weight if the ratio were the
    same for every component); and symmetrically with the halves swapped. The estimate
    ``½[w₁a₂ + (1 − w₁)b] + ½[w₂a₁ + (1 − w₂)b]`` is unbiased because each weight is independent of what it
    multiplies. With ``ONE_PAIR_MIN_OWN`` or more components with own variances, a one-pair component's ratio
    comes from half of them and its reported Var b from the other half's ratio times its score-function
    variance. Components without pairs get the pooled score function. Returns (estimate, its variance treating
    the weights as fixed, mean weight on the score function), each ``[*batch, J]``.
    """
    (a1, va1, n1), (a2, va2, n2) = halves
    n = n1 + n2
    pooled, pooled_var = (n1 * a1 + n2 * a2) / n, (n1 * n1 * va1 + n2 * n2 * va2) / (n * n)
    two = pairs >= 1
    m = pairs.to(vb.dtype).clamp_min(1)
    own = two & torch.isfinite(vb)
    tiny = torch.finfo(vb.dtype).tiny                 # 1e-300 would be 0 in float32: 0/0 on a flat f
    one = two & ~own
    k_own = own.sum(-1, keepdim=True)
    # With ONE_PAIR_MIN_OWN or more own-variance components, the one-pair components' weights come from half of
    # them (A) and their reported variance from the other half (B): a reported variance that used the ratio the
    # weight used is low exactly when the weight trusts MVD most (measured 0.71-0.94x the true variance).
    split = k_own >= ONE_PAIR_MIN_OWN
    rank = own.long().cumsum(-1)
    group_a, group_b = own & (rank % 2 == 1), own & (rank % 2 == 0)
    # components with own-pair variances decide the ratio where there are any besides j (the differences to
    # the score function bury a small MVD variance under the score function's)
    n_own = k_own - own.long()
    w1, w2 = _half_weights(halves, b, vb, m, own, torch.where(n_own > 0, own, two))
    if bool((one & split).any()):
        w1_a, w2_a = _half_weights(halves, b, vb, m, own, group_a)
        w1, w2 = torch.where(one & split, w1_a, w1), torch.where(one & split, w2_a, w2)
    est = 0.5 * (w1 * a2 + (1 - w1) * b) + 0.5 * (w2 * a1 + (1 - w2) * b)
    w_mean = 0.5 * (w1 + w2)
    # A one-pair component's per-pair MVD variance: with a split, group B's MVD/score-function variance ratio
    # times the component's own score-function variance per evaluation. Else (b − a₁)(b − a₂): unbiased for
    # Var b, but as noisy as the score function's halves (clamped at 0 below, it over-reports wherever MVD is
    # much better) and sharing them with the weights (measured 1.3-1.4x on Bernoulli).
    per_eval = pooled_var * n                          # the score function's variance × evaluations, [*batch, J]
    ratio_b = (torch.where(group_b, vb * m, torch.zeros_like(vb)).sum(-1, keepdim=True)
               / torch.where(group_b, per_eval, torch.zeros_like(vb)).sum(-1, keepdim=True).clamp_min(tiny))
    single = torch.where(split, ratio_b * per_eval / m, (b - a1) * (b - a2))
    var_b = torch.where(own, vb, single)
    var = 0.25 * (w1 * w1 * va2 + w2 * w2 * va1) + (1 - w_mean) ** 2 * var_b
    # a single pair's term is unbiased but can come out negative; clamped at 0 (not at the score function's
    # part, which measured 1.26-1.35x the true variance on Bernoulli with one pair on most components)
    var = torch.where(own, var, var.clamp_min(0))
    return (torch.where(two, est, pooled), torch.where(two, var, pooled_var),
            torch.where(two, w_mean, torch.ones_like(w_mean)))
