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
from stochgrad.estimators.hybrid import _flat, min_variance_weight
from stochgrad.estimators.measure_valued import MeasureValued
from stochgrad.estimators.running import ComponentStats, StatsMixin
from stochgrad.estimators.score_function import ScoreFunction

F64 = torch.float64


def water_fill(A: Tensor, b: Tensor, lower: Tensor, total: int | Tensor, iters: int = 50) -> Tensor:
    """Integer MVD pairs per component minimising Σ h_j(m_j) with Σ m_j = total, per copy.

    Args:
      A: score-function variance per component at the chosen n, ``[*batch, J]`` (``inf`` where there is none).
      b: per-pair MVD variance, ``[*batch, J]`` (> 0).
      lower: least pairs per component (0 or 1), ``[*batch, J]``; ``Σ lower <= total``.
      total: pairs to hand out per copy (an int, or an int tensor broadcastable to ``[*batch]``).
    Returns:
      ``[*batch, J]`` int64 counts summing to ``total`` in every copy.
    """
    total = torch.as_tensor(total).expand(A.shape[:-1]).to(F64)
    sqrt_b = b.sqrt()
    # b/A: the score function's head start; A = 0 (the score function is exact) means no pairs at all.
    offset = torch.where(torch.isfinite(A), b / A.clamp_min(1e-300), torch.zeros_like(b))
    offset = torch.where(A > 0, offset, torch.full_like(b, math.inf))

    def alloc(t: Tensor) -> Tensor:
        return torch.maximum(lower, t.unsqueeze(-1) * sqrt_b - offset)

    # Σ max(lower, t√b − offset) >= t Σ√b − Σ offset, so this t hands out at least ``total``.
    finite = torch.isfinite(offset)
    hi = (total + torch.where(finite, offset, 0.0).sum(-1) + lower.sum(-1)) / \
        torch.where(finite, sqrt_b, 0.0).sum(-1).clamp_min(1e-300)
    lo = torch.zeros_like(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = alloc(mid).sum(-1) > total
        hi = torch.where(over, mid, hi)
        lo = torch.where(over, lo, mid)
    m = alloc(lo)
    base = torch.maximum(m.floor(), lower).long()
    left = total.long().unsqueeze(-1) - base.sum(-1, keepdim=True)            # >= 0 since Σ alloc(lo) <= total
    frac = (m - base).clamp_min(0) + 1e-9 * sqrt_b / sqrt_b.sum(-1, keepdim=True).clamp_min(1e-300)
    order = frac.argsort(-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order))
    extra = (rank < left).long()
    # If the leftover exceeds J (possible only when everything was tiny), spread it evenly.
    over = (left - extra.sum(-1, keepdim=True)).clamp_min(0)
    J = base.shape[-1]
    return base + extra + over // J + (torch.arange(J) < over % J).long()


def predicted_mse(A: Tensor, b: Tensor, m: Tensor) -> Tensor:
    """Σ_j h_j(m_j) per copy, ``[*batch]``."""
    mf = m.to(F64)
    with_mvd = A * b / (A * mf + b)
    pure = b / mf.clamp_min(1)
    h = torch.where(m > 0, torch.where(torch.isfinite(A), with_mvd, pure), A)
    return h.sum(-1)


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
        k = max(k + 1, int(k * 1.25))
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
    def _mvd_variance(self, name: str) -> Tensor:
        """Running per-pair MVD variance ``[*batch, J]`` (> 0). A component without an estimate of its own
        borrows, in this order: the pooled MVD/score-function ratio times its score-function variance, the
        median of that ratio over the components that have one, or its score-function variance."""
        st = self._stats[name]
        a = st.first.value.to(F64)
        own_known = st.second_own.known | st.second_succ.known
        own = torch.where(st.second_own.known, st.second_own.value, st.second_succ.value).to(F64)
        pooled = (st.ratio.to(F64) * a)
        ratio_own = torch.where(own_known & (a > 0), own / a.clamp_min(1e-300), torch.nan)
        median = ratio_own.nanmedian(-1, keepdim=True).values * a
        fallback = torch.where(a > 0, a, torch.ones_like(a))
        v = torch.where(own_known, own,
                        torch.where(torch.isfinite(pooled), pooled,
                                    torch.where(torch.isfinite(median), median, fallback)))
        return torch.maximum(v, 1e-9 * a.clamp_min(0)).clamp_min(1e-300)

    def _allocate(self, dist: Family, names: tuple[str, ...], sf_names: list[str], mvd_names: list[str],
                  n: int, S: int, generator: torch.Generator | None) -> tuple[float, dict[str, Tensor]]:
        """Predicted MSE (mean over copies) and pairs per component for n score-function samples."""
        a = {p: self._stats[p].first.value.to(F64) for p in names}
        b = {p: self._mvd_variance(p) for p in mvd_names}
        A = {p: (a[p] / n if (n > 0 and p in sf_names) else torch.full_like(a[p], math.inf)) for p in names}
        lower = {p: torch.isinf(A[p]).to(F64) for p in mvd_names}
        # Split S between parameters on the joint allocation averaged over copies, then allocate per copy.
        if len(mvd_names) > 1:
            joint = water_fill(torch.cat([A[p] for p in mvd_names], -1), torch.cat([b[p] for p in mvd_names], -1),
                               torch.cat([lower[p] for p in mvd_names], -1), S)
            sizes = [dist.n_components(p) for p in mvd_names]
            shares = [c.sum(-1).to(F64).mean().item() for c in joint.split(sizes, -1)]
            per = [int(round(x)) for x in shares]
            per[-1] = S - sum(per[:-1])
            mins = [int(lower[p].sum(-1).max()) for p in mvd_names]
            per = [max(x, lo) for x, lo in zip(per, mins)]
            if sum(per) > S:
                return math.inf, {}
            per[int(torch.tensor(per).argmax())] += S - sum(per)
        else:
            per = [S] if mvd_names else []
        counts, total = {}, torch.zeros(dist.batch_shape, dtype=F64)
        for p, s_p in zip(mvd_names, per):
            if s_p < int(lower[p].sum(-1).max()):
                return math.inf, {}
            counts[p] = water_fill(A[p], b[p], lower[p], s_p) if s_p > 0 else torch.zeros_like(a[p], dtype=torch.long)
            total = total + predicted_mse(A[p], b[p], counts[p])
        for p in names:
            if p not in mvd_names:
                total = total + A[p].sum(-1)
        return float(total.mean()), counts

    def _decide(self, dist: Family, names: tuple[str, ...], sf_names: list[str], mvd_names: list[str],
                generator: torch.Generator | None) -> tuple[int, dict[str, Tensor]]:
        B = self.budget
        J = {p: dist.n_components(p) for p in names}
        known = all(bool(self._stats[p].first.known.all()) for p in sf_names) and \
            all(bool(self._stats[p].second_known.any()) for p in mvd_names)
        if not known:
            return self._first_split(dist, names, sf_names, mvd_names, generator)
        if len(mvd_names) == 1 and len(names) == 1:
            return self._decide_one(dist, names[0], bool(sf_names), generator)
        best = (math.inf, 0, {})
        for n in _grid(B):
            if n == 0 and (len(sf_names) != len(names) or set(mvd_names) != set(names)):
                if sf_names and len(mvd_names) < len(names):
                    continue
            if n > 0 and not sf_names:
                continue
            if n == 0 and any(p not in mvd_names for p in names):
                continue
            S = (B - n) // 2
            if not mvd_names and S > 0:
                continue
            cost, counts = self._allocate(dist, names, sf_names, mvd_names, n, S, generator)
            if cost < best[0]:
                best = (cost, n, counts)
        cost, n, counts = best
        if not counts and mvd_names:
            return self._first_split(dist, names, sf_names, mvd_names, generator)
        if n > 0 and self.explore > 0:
            counts = self._explore(counts, generator)
        self.last_decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                              "predicted_mse": cost}
        return n, counts

    def _decide_one(self, dist: Family, p: str, has_sf: bool,
                    generator: torch.Generator | None) -> tuple[int, dict[str, Tensor]]:
        """The common case, one parameter: every candidate n at once."""
        B = self.budget
        ns = [n for n in _grid(B) if (n == 0 or has_sf) and (n > 0 or (B // 2) >= dist.n_components(p))]
        n_t = torch.tensor(ns, dtype=F64).reshape(-1, *([1] * (len(dist.batch_shape) + 1)))    # [G, 1.., 1]
        a = self._stats[p].first.value.to(F64)
        b = self._mvd_variance(p)
        A = torch.where(n_t > 0, a / n_t.clamp_min(1), torch.full_like(n_t, math.inf)).expand(len(ns), *a.shape)
        lower = torch.isinf(A).to(F64)
        S = torch.tensor([(B - n) // 2 for n in ns]).reshape(-1, *([1] * len(dist.batch_shape)))
        counts = water_fill(A, b.expand_as(A), lower, S)
        cost = predicted_mse(A, b.expand_as(A), counts).reshape(len(ns), -1).mean(-1)
        i = int(cost.argmin())
        n, chosen = ns[i], counts[i]
        out = {p: chosen}
        if n > 0 and self.explore > 0:
            out = self._explore(out, generator)
        self.last_decision = {"n_sf": n, "pairs": {p: (B - n) // 2}, "predicted_mse": float(cost[i])}
        return n, out

    def _explore(self, counts: dict[str, Tensor], generator: torch.Generator | None) -> dict[str, Tensor]:
        """Move ``explore`` of each parameter's pairs from the most-served components to random ones."""
        out = {}
        for p, c in counts.items():
            S = int(c.sum(-1).flatten()[0])
            e = int(math.floor(self.explore * S))
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
        self.last_decision = {"n_sf": n, "pairs": {p: int(c.sum(-1).flatten()[0]) for p, c in counts.items()},
                              "predicted_mse": None}
        return n, counts

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
        self._ensure_stats(dist, names)
        n, counts = self._decide(dist, names, sf_names, mvd_names, generator)
        counts = {p: c for p, c in counts.items() if int(c.sum(-1).flatten()[0]) > 0}
        weights_a = {}
        for p in names:
            st = self._stats[p]
            if p in counts and p in sf_names and n > 0:
                A = st.first.value.to(F64) / n
                B = self._mvd_variance(p) / counts[p].clamp_min(1)
                w = min_variance_weight(A, B)
                known = st.first.known & st.second_known
                weights_a[p] = torch.where(known, w, torch.full_like(w, 0.5))
        sf_plan = ScoreFunction(n, baseline="loo").plan(dist, generator, sf_names) if n >= 2 else None
        dims = {p: slots(c) for p, c in counts.items()}
        mvd_plan = MeasureValued(1, coupled=True, dims=dims).plan(dist, generator, list(dims)) if dims else None
        return AutoPlan(self, dist, names, counts, sf_plan, mvd_plan, n, weights_a)


class AutoPlan(Plan):
    def __init__(self, owner: Auto, dist: Family, names: tuple[str, ...], counts: dict[str, Tensor],
                 sf_plan: Plan | None, mvd_plan: Plan | None, n_sf: int, weights_a: dict[str, Tensor]) -> None:
        self.owner, self.dist, self.names, self.counts = owner, dist, names, counts
        self.sf_plan, self.mvd_plan, self.n_sf, self.weights_a = sf_plan, mvd_plan, n_sf, weights_a
        parts = [p.points for p in (sf_plan, mvd_plan) if p is not None]
        self.points = torch.cat([parts[0]] + [p.to(parts[0].dtype) for p in parts[1:]], 0)

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        dist = self.dist
        n1 = self.sf_plan.n_evals if self.sf_plan is not None else 0
        g1 = self.sf_plan._combine(values[:n1]) if self.sf_plan is not None else None
        g2 = self.mvd_plan._combine(values[n1:]) if self.mvd_plan is not None else None
        grad, var = {}, {}
        for p in self.names:
            has_sf = g1 is not None and p in g1.grad
            has_mvd = g2 is not None and p in g2.grad
            if not has_sf:
                grad[p], var[p] = g2.grad[p], g2.variance[p]
                continue
            a, va = _flat(g1.grad[p], dist, p), _flat(g1.variance[p], dist, p)
            if not has_mvd:
                grad[p], var[p] = g1.grad[p], g1.variance[p]
                continue
            b, vb = _flat(g2.grad[p], dist, p), _flat(g2.variance[p], dist, p)
            served = self.counts[p] > 0
            w = torch.where(served, self.weights_a[p].to(a.dtype), torch.ones_like(a))
            vb_rep = torch.where(torch.isfinite(vb), vb,
                                 (self.owner._mvd_variance(p) / self.counts[p].clamp_min(1)).to(vb.dtype))
            grad[p] = (w * a + (1 - w) * torch.where(served, b, torch.zeros_like(b))).reshape(dist.param(p).shape)
            var[p] = (w * w * va + (1 - w) ** 2 * torch.where(served, vb_rep, torch.zeros_like(vb))
                      ).reshape(dist.param(p).shape)
        self._update(g1, g2)
        value = g1.value if g1 is not None else g2.value
        info = {"decision": dict(self.owner.last_decision or {}), "pairs": self.counts, "weight_sf": self.weights_a}
        return GradientEstimate(grad, var, value, self.n_evals, values, None, info)

    def _update(self, g1: GradientEstimate | None, g2: GradientEstimate | None) -> None:
        dist = self.dist
        for p in self.names:
            has_sf = g1 is not None and p in g1.grad
            first = _flat(g1.variance[p], dist, p) * self.n_sf if has_sf else None   # per-sample variance
            if g2 is None or p not in self.counts:
                self.owner._stats[p].update(first, None, None, None)
                continue
            c = self.counts[p]
            b = _flat(g2.grad[p], dist, p)
            vb = _flat(g2.variance[p], dist, p) * c          # per pair (NaN where a component had one pair)
            if has_sf:
                self.owner._stats[p].update(first, c > 0, b, vb, first=_flat(g1.grad[p], dist, p),
                                            first_est_var=_flat(g1.variance[p], dist, p), unit=c)
            else:
                self.owner._stats[p].update(None, c > 0, b, vb)
