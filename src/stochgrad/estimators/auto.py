"""``Auto``: a budget-aware estimator that splits B evaluations between the score function and per-component
MVD so as to minimise the predicted mean squared error.

It keeps running (exponentially averaged) per-component estimates of the per-sample variance of the score
function, ``a_j`` (n samples give ``A_j = a_j / n``), and of one coupled MVD pair, ``b_j``. Giving component j
``m_j`` MVD pairs and combining the two unbiased estimates with minimum-variance weights has variance

    h_j(m_j) = A_j (b_j/m_j) / (A_j + b_j/m_j)           (h_j(0) = A_j: score function alone),

so for a split ``n + 2 Σ_j m_j = B`` the predicted MSE is ``Σ_j h_j(m_j)``. For each candidate n, the best
allocation of the S = (B − n)/2 pairs is a water-filling problem: ``m_j = max(0, t √b_j − b_j/A_j)`` with t set
so that the m_j sum to S (with n = 0, pure MVD, it is the Neyman allocation ``m_j ∝ √b_j`` with at least one
pair each). Auto rounds it to integers, evaluates the predicted MSE for a grid of n, and takes the best n.
So it spends MVD pairs where they buy the most, many on a component whose MVD estimate is noisy and none
where the score function is already good, and it uses the score function only where it pays.

Every decision uses only earlier estimates, so the current estimate is unbiased. The score function uses the
leave-one-out baseline. The first estimate has no history: if the budget allows it gives every component one
pair and the rest to the score function (which measures every variance at once), otherwise half and half on
random components; its weights are ½, ½. A small fraction (``explore``) of the pairs goes to random
components so that no MVD variance estimate goes stale.

Parameters without a score function (Uniform's ends) get at least one pair per component; parameters without
a decomposition (Gamma's concentration) are estimated by the score function alone.
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
from stochgrad.estimators.hybrid import min_variance_weight
from stochgrad.estimators.measure_valued import MeasureValued
from stochgrad.estimators.running import ComponentStats, StatsMixin, to_components
from stochgrad.estimators.score_function import ScoreFunction

F64 = torch.float64
#: Copies on which the shared split is chosen (all copies then get their own allocation for it).
DECIDE_COPIES = 64
#: Relative predicted gain a score-function/MVD mix needs over pure MVD to be chosen. The running variances
#: behind the prediction are noisy, and the minimum over candidates of noisy predictions is biased low; with
#: tiny budgets (B = 4D at D = 2) a mix predicted 5% better measured 1.5-2.5x worse than pure MVD.
MIX_MARGIN = 0.15


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
    offset = torch.where(torch.isfinite(A), b / A.clamp_min(1e-300), torch.zeros_like(b))
    offset = torch.where(A > 0, offset, torch.full_like(b, math.inf))
    kink = (lower + offset) / sqrt_b.clamp_min(1e-300)
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
    t = ((total.unsqueeze(-1) - base_total + C_k) / B_k.clamp_min(1e-300)).squeeze(-1)
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
      explore: fraction of the MVD pairs given to random components.

    Attributes:
      last_decision: ``{"n_sf": n, "pairs": {param: pairs}, "predicted_mse": …}`` of the latest plan.

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
        self.last_decision: dict | None = None

    def reset(self) -> None:
        super().reset()
        self.last_decision = None

    # -- budget -------------------------------------------------------------------------------------------
    @staticmethod
    def minimum_budget(dist: Family, names: Sequence[str]) -> int:
        """The smallest budget Auto can work with: one MVD pair per component of the parameters only MVD
        supports, plus 2 (a leave-one-out score function) if any parameter needs the score function."""
        forced = [n for n in names if n not in dist.score_params]
        need = 2 * sum(dist.n_components(n) for n in forced)
        return need if len(forced) == len(names) else need + 2

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        names = resolve_params(dist, params)
        if all(n not in dist.score_params for n in names):
            return self.budget - self.budget % 2
        return self.budget

    # -- deciding ----------------------------------------------------------------------------------------
    @staticmethod
    def _mvd_variance(st: ComponentStats) -> Tensor:
        """Running per-pair MVD variance ``[*batch, J]`` (> 0). A component without an estimate of its own
        borrows, in this order: the pooled MVD/score-function ratio times its score-function variance, the
        median of that ratio over the components that have one, or its score-function variance."""
        a = st.first.value.to(F64)
        own, own_known = st.second_direct()
        own = own.to(F64)
        pooled = (st.ratio.to(F64) * a)
        ratio_own = torch.where(own_known & (a > 0), own / a.clamp_min(1e-300), torch.nan)
        median = ratio_own.nanmedian(-1, keepdim=True).values * a
        fallback = torch.where(a > 0, a, torch.ones_like(a))
        v = torch.where(own_known, own,
                        torch.where(torch.isfinite(pooled), pooled,
                                    torch.where(torch.isfinite(median), median, fallback)))
        return torch.maximum(v, 1e-9 * a.clamp_min(0)).clamp_min(1e-300)

    def _decide(self, stats: dict[str, ComponentStats], dist: Family, names: tuple[str, ...], sf_names: list[str],
                mvd_names: list[str], generator: torch.Generator | None) -> tuple[int, dict[str, Tensor], dict]:
        """Evaluate every candidate n at once: one batched water-fill over the components of all parameters."""
        B = self.budget
        known = all(bool(stats[p].first.known.all()) for p in sf_names) and \
            all(bool(stats[p].second_known.any()) for p in mvd_names)
        if not known:
            return self._first_split(dist, names, sf_names, mvd_names, generator)
        sizes = [dist.n_components(p) for p in mvd_names]
        pure_ok = set(mvd_names) == set(names) and B // 2 >= sum(sizes)
        forced_pairs = sum(dist.n_components(p) for p in mvd_names if p not in sf_names)
        ns = [n for n in _grid(B) if (n > 0 and sf_names and (B - n) // 2 >= forced_pairs) or (n == 0 and pure_ok)]
        if not ns:
            return self._first_split(dist, names, sf_names, mvd_names, generator)
        G = len(ns)
        bview = (G, *([1] * (len(dist.batch_shape) + 1)))
        n_t = torch.tensor(ns, dtype=F64).reshape(bview)
        a = {p: stats[p].first.value.to(F64) for p in names}

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
        regret = (cost / cost.min(0).values.clamp_min(1e-300)).median(-1).values
        i = int(regret.argmin())
        if ns[0] == 0 and i != 0 and float(regret[i]) > (1 - MIX_MARGIN) * float(regret[0]):
            i = 0          # a mix must clearly beat pure MVD: its predicted gain is within the estimates' noise
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
        if n > 0 and self.explore > 0:     # only where the score function covers a component left without pairs
            counts = {p: (self._explore({p: c}, generator)[p] if p in sf_names else c) for p, c in counts.items()}
        decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                    "predicted_mse": float(mean_cost[i])}
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

    def _first_split(self, dist, names, sf_names, mvd_names, generator):
        B = self.budget
        J = {p: dist.n_components(p) for p in names}
        forced = [p for p in mvd_names if p not in sf_names]
        full = 2 * sum(J[p] for p in mvd_names)
        if not sf_names:
            n = 0
        elif B - full >= 2:
            n = B - full
        else:
            n = max(2, (B - 2 * sum(J[p] for p in forced)) // 2)
        S = (B - n) // 2
        counts = {}
        free = [p for p in mvd_names if p not in forced]
        left = S - sum(J[p] for p in forced)
        for p in mvd_names:
            c = torch.zeros((*dist.batch_shape, J[p]), dtype=torch.long)
            if p in forced:
                c += 1
            counts[p] = c
        if left > 0 and free + forced:
            pool = free or forced
            per = [left // len(pool) + (1 if i < left % len(pool) else 0) for i in range(len(pool))]
            for p, s_p in zip(pool, per):
                r = torch.rand((*dist.batch_shape, s_p, J[p]), generator=generator).argmax(-1)
                counts[p].scatter_add_(-1, r, torch.ones_like(r))
        counts = {p: c for p, c in counts.items() if int(c.sum(-1).flatten()[0]) > 0}
        decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                    "predicted_mse": None}
        return n, counts, decision

    # -- plan / combine -----------------------------------------------------------------------------------
    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> AutoPlan:
        names = resolve_params(dist, params)
        sf_names = [p for p in names if p in dist.score_params]
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
        n, counts, decision = self._decide(stats, dist, names, sf_names, mvd_names, generator)
        counts = {p: c for p, c in counts.items() if int(c.sum(-1).flatten()[0]) > 0}
        weights_a, var_b = {}, {}
        for p in counts:
            st = stats[p]
            b = self._mvd_variance(st) / counts[p].clamp_min(1)
            known_b = st.second_known
            var_b[p] = torch.where(known_b, b, torch.nan)        # per-component MVD variance from history
            if p in sf_names and n > 0:
                w = min_variance_weight(st.first.value.to(F64) / n, b)
                weights_a[p] = torch.where(st.first.known & known_b, w, torch.full_like(w, 0.5))
        sf_plan = ScoreFunction(n, baseline="loo").plan(dist, generator, sf_names) if n >= 2 else None
        dims = {p: slots(c) for p, c in counts.items()}
        mvd_plan = MeasureValued(1, coupled=True, dims=dims).plan(dist, generator, list(dims)) if dims else None
        return AutoPlan(self, dist, names, counts, sf_plan, mvd_plan, n, weights_a, var_b, decision)

    def update(self, estimate: GradientEstimate) -> None:
        """Fold one estimate (of a plan of this estimator) into the running variances; once per estimate."""
        plan = self.claim(estimate)
        g1, g2, dist = estimate.info["first"], estimate.info["second"], plan.dist
        self.last_decision = dict(plan.decision)
        for p in plan.names:
            has_sf = g1 is not None and p in g1.grad
            first = to_components(g1.variance[p], dist, p) * plan.n_sf if has_sf else None   # per sample
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
                 var_b: dict[str, Tensor], decision: dict) -> None:
        self.owner, self.dist, self.names, self.counts = owner, dist, names, counts
        self.sf_plan, self.mvd_plan, self.n_sf, self.weights_a = sf_plan, mvd_plan, n_sf, weights_a
        self.var_b, self.decision, self.folded = var_b, decision, False
        parts = [p.points for p in (sf_plan, mvd_plan) if p is not None]
        self.points = torch.cat([parts[0]] + [p.to(parts[0].dtype) for p in parts[1:]], 0)

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        dist = self.dist
        n1 = self.sf_plan.n_evals if self.sf_plan is not None else 0
        g1 = self.sf_plan.combine(values[:n1]) if self.sf_plan is not None else None
        g2 = self.mvd_plan.combine(values[n1:]) if self.mvd_plan is not None else None
        grad, var = {}, {}
        for p in self.names:
            has_sf = g1 is not None and p in g1.grad
            has_mvd = g2 is not None and p in g2.grad
            shape = dist.param(p).shape
            if not has_sf:
                vb = to_components(g2.variance[p], dist, p)
                vb = torch.where(torch.isfinite(vb), vb, self.var_b[p].to(vb.dtype))
                grad[p], var[p] = g2.grad[p], vb.reshape(shape)
                continue
            if not has_mvd:
                grad[p], var[p] = g1.grad[p], g1.variance[p]
                continue
            a, va = to_components(g1.grad[p], dist, p), to_components(g1.variance[p], dist, p)
            b, vb = to_components(g2.grad[p], dist, p), to_components(g2.variance[p], dist, p)
            served = self.counts[p] > 0
            w = torch.where(served, self.weights_a[p].to(a.dtype), torch.ones_like(a))
            grad[p] = (w * a + (1 - w) * torch.where(served, b, torch.zeros_like(b))).reshape(shape)
            var[p] = _combined_variance(a, va, b, vb, self.var_b[p].to(vb.dtype), w, served).reshape(shape)
        value = g1.value if g1 is not None else g2.value
        info = {"decision": dict(self.decision), "pairs": self.counts, "weight_sf": self.weights_a,
                "first": g1, "second": g2, "plan": self}
        return GradientEstimate(grad, var, value, self.n_evals, values, None, info)


def _combined_variance(a: Tensor, va: Tensor, b: Tensor, vb: Tensor, vb_history: Tensor, w: Tensor,
                       served: Tensor) -> Tensor:
    """Variance of ``w·a + (1 − w)·b`` for independent unbiased a (score function) and b (MVD), ``[*batch, J]``.

    ``w²·va + (1 − w)²·vb`` where b had two or more pairs (vb from its own pairs). Where it had one pair, b's
    variance is not in the current samples alone; since ``E (a − b)² = Var a + Var b``,
    ``(1 − w)²(a − b)² + (2w − 1)·va`` is an unbiased estimate of the combination's variance from the current
    samples, and non-negative for w ≥ ½ (at the first estimate w = ½ and it is ``(a − b)²/4``). For w < ½
    (MVD trusted more) b's variance comes from the running per-pair variance of earlier estimates.
    """
    own = w * w * va + (1 - w) ** 2 * vb
    cross = (1 - w) ** 2 * (a - b) ** 2 + (2 * w - 1) * va
    hist = w * w * va + (1 - w) ** 2 * vb_history
    single = torch.where((w >= 0.5) | ~torch.isfinite(hist), cross, hist)
    return torch.where(served, torch.where(torch.isfinite(vb), own, single), va)
