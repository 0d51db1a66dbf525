"""Convex-combined estimators: CCMVD (score function + MVD on the K noisiest components) and its control CCSF.

Both spend 2N evaluations on a score-function estimate of every component, choose K components per
parameter, spend 2·M·K more evaluations per parameter on a second estimate there (coupled MVD for CCMVD, a
second score function for CCSF) and combine the two on the chosen components with minimum-variance convex
weights

    w_sf = (σ²_2 − σ_sf,2) / (σ²_sf + σ²_2 − 2 σ_sf,2),   w_2 = 1 − w_sf,

where the covariance σ_sf,2 is 0 here because the two estimates use independent evaluations. (The formula as
printed in the thesis's blog post swaps the numerator and gives the larger weight to the noisier estimate;
``tests/estimators/test_hybrid.py`` shows the difference.)

The choice of components and, with ``weights="running"``, the weights come from exponential averages of the
variances seen in *earlier* estimates, never from the current samples, so the current estimate is unbiased
(the first estimate, with no history, chooses at random and weighs ½, ½). ``weights="batch"`` takes the
variances from the current samples instead: each weight then correlates with the estimates it weighs, which
biases the combination (measured in docs/benchmarks.md); it needs M ≥ 2 so that the MVD variance can be
estimated from the current samples at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import weak_derivative
from stochgrad.errors import BudgetError, InvalidArgumentError, UnsupportedError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan, resolve_params
from stochgrad.estimators.measure_valued import MeasureValued
from stochgrad.estimators.running import ComponentStats, StatsMixin, combined_variance, to_components
from stochgrad.estimators.score_function import ScoreFunction


def min_variance_weight(var_a: Tensor, var_b: Tensor, cov: Tensor | float = 0.0) -> Tensor:
    """Weight of estimate a in the minimum-variance convex combination ``w·a + (1 − w)·b``, clipped to [0, 1].

    ``w = (σ²_b − σ_ab) / (σ²_a + σ²_b − 2σ_ab)``; where the variances are unknown (NaN) or both zero it is ½.
    """
    den = var_a + var_b - 2 * cov
    w = (var_b - cov) / den
    w = torch.where(torch.isfinite(w) & (den > 0), w, torch.full_like(w, 0.5))
    return w.clamp(0.0, 1.0)


def _choose(score: Tensor | None, k: int, batch: torch.Size, n: int, generator: torch.Generator | None) -> Tensor:
    """K distinct components per copy, ``[*batch, k]``: the largest ``score`` (ties and unknowns at random)."""
    noise = torch.rand((*batch, n), generator=generator)
    key = noise if score is None else torch.where(torch.isfinite(score), score, torch.full_like(score, math.inf))
    key = key.to(torch.float64) + 1e-12 * noise.to(torch.float64)   # random tie-breaking, deterministic per seed
    return key.topk(k, dim=-1).indices


class _Hybrid(StatsMixin, Estimator):
    """Shared machinery of CCMVD and CCSF (the second estimator differs)."""

    second_name = ""

    def __init__(self, n_samples: int, samples_per_dim: int, k: int, select: str = "variance",
                 weights: str = "running", antithetic: bool | None = None, baseline: str | None = "loo",
                 decay: float = 0.9) -> None:
        for arg, v, lo in (("n_samples", n_samples, 1), ("samples_per_dim", samples_per_dim, 1), ("k", k, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise BudgetError(f"{arg}: {type(self).__name__} needs an int >= {lo}; got {v!r}")
        if select not in ("variance", "random"):
            raise InvalidArgumentError(f"select: got {select!r}; choose 'variance' or 'random'")
        if weights not in ("batch", "running"):
            raise InvalidArgumentError(f"weights: got {weights!r}; choose 'batch' or 'running'")
        if not 0.0 <= decay < 1.0:
            raise InvalidArgumentError(f"decay: must be in [0, 1); got {decay}")
        if weights == "batch" and samples_per_dim < 2:
            raise BudgetError(
                f"samples_per_dim: weights='batch' estimates the second estimator's variance from the current "
                f"samples and needs samples_per_dim >= 2; got {samples_per_dim}. Use weights='running' for M = 1")
        self.n_samples, self.samples_per_dim, self.k = n_samples, samples_per_dim, k
        self.select, self.weights, self.antithetic, self.baseline, self.decay = (
            select, weights, antithetic, baseline, decay)
        self._stats: dict[str, ComponentStats] = {}

    # -- the estimator ------------------------------------------------------------------------------------
    def _use_antithetic(self, dist: Family) -> bool:
        return dist.symmetric if self.antithetic is None else self.antithetic

    def _sf(self, dist: Family, n: int) -> ScoreFunction:
        anti = self._use_antithetic(dist)
        return ScoreFunction(2 * n, baseline=self.baseline, antithetic=anti)

    def _second(self, dist: Family, comps: dict[str, Tensor]) -> Estimator:
        raise NotImplementedError

    def _second_evals(self, dist: Family, names: tuple[str, ...]) -> int:
        return 2 * self.samples_per_dim * self.k * len(names)

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        names = resolve_params(dist, params)
        return 2 * self.n_samples + self._second_evals(dist, names)

    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> _HybridPlan:
        names = resolve_params(dist, params)
        for name in names:
            if name not in dist.score_params:
                raise UnsupportedError(
                    f"{type(self).__name__} combines a score-function estimate with a second one, but the score "
                    f"function is not valid for {type(dist).__name__}.{name}; use MeasureValued")
            n = dist.n_components(name)
            if self.k > n:
                raise InvalidArgumentError(f"k: {type(self).__name__} chooses k components per parameter, but "
                                           f"{type(dist).__name__}.{name} has {n}; got k={self.k}")
        self._check_second(dist, names)
        if dist.dtype not in (torch.float32, torch.float64):
            raise InvalidArgumentError(
                f"dist: {type(self).__name__} needs float32 or float64 parameters (its weights come from running "
                f"variances, which {dist.dtype} cannot hold); got {type(dist).__name__} with {dist.dtype} "
                "parameters. Build the distribution from float32 tensors")
        dist = dist.detach()
        stats = self.stats_for(dist, names)
        comps = {}
        for name in names:
            v_sf = stats[name].first
            score = v_sf.value if self.select == "variance" and bool(v_sf.known.all()) else None
            comps[name] = _choose(score, self.k, dist.batch_shape, dist.n_components(name), generator)
        first = self._sf(dist, self.n_samples).plan(dist, generator, names)
        second = self._second(dist, comps).plan(dist, generator, names)
        return _HybridPlan(self, stats, dist, names, comps, first, second)

    def _check_second(self, dist: Family, names: tuple[str, ...]) -> None:
        pass

    def update(self, estimate: GradientEstimate) -> None:
        """Fold one estimate (of a plan of this estimator) into the running variances; once per estimate."""
        plan = self.claim(estimate)
        g1, g2, dist = estimate.info["first"], estimate.info["second"], plan.dist
        for name in plan.names:
            a, va = to_components(g1.grad[name], dist, name), to_components(g1.variance[name], dist, name)
            b, vb = to_components(g2.grad[name], dist, name), to_components(g2.variance[name], dist, name)
            chosen = torch.zeros_like(va, dtype=torch.bool).scatter_(-1, plan.comps[name], True)
            self._stats[name].update(va, chosen, b, vb, first=a, first_est_var=va)


class _HybridPlan(Plan):
    """The points of a CCMVD/CCSF estimate; everything it reads from the running statistics is taken when the
    plan is made, so ``combine`` is a pure function of the plan and the values."""

    def __init__(self, owner: _Hybrid, stats: dict[str, ComponentStats], dist: Family, names: tuple[str, ...],
                 comps: dict[str, Tensor], first: Plan, second: Plan) -> None:
        self.owner, self.dist, self.names, self.comps, self.first, self.second = owner, dist, names, comps, first, second
        self.folded = False
        self.points = torch.cat([first.points, second.points.to(first.points.dtype)], 0)
        self._weights_from_history = {n: _running_weight(stats[n].lagged()) for n in names}
        self._second_var_from_history = {n: stats[n].second_variance() for n in names}
        self._previous = {n: stats[n].previous() for n in names}

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        n1 = self.first.n_evals
        g1 = self.first.combine(values[:n1])
        g2 = self.second.combine(values[n1:])
        dist = self.dist
        grad, var, weights = {}, {}, {}
        for name in self.names:
            a, va = to_components(g1.grad[name], dist, name), to_components(g1.variance[name], dist, name)
            b, vb = to_components(g2.grad[name], dist, name), to_components(g2.variance[name], dist, name)
            idx = self.comps[name]
            a_s, va_s, b_s, vb_s = (t.gather(-1, idx) for t in (a, va, b, vb))
            if self.owner.weights == "batch":
                w = min_variance_weight(va_s, vb_s)
            else:
                w = self._weights_from_history[name].gather(-1, idx)
            out, out_var = a.clone(), va.clone()
            out.scatter_(-1, idx, w * a_s + (1 - w) * b_s)
            if self.owner.weights == "batch":
                chosen_var = w * w * va_s + (1 - w) ** 2 * vb_s
            else:
                prev = tuple(t.gather(-1, idx) for t in self._previous[name])
                history = self._second_var_from_history[name].gather(-1, idx)     # of b itself (unit 1)
                chosen_var = combined_variance(w, a_s, va_s, b_s, vb_s, 1.0, prev, history)
            out_var.scatter_(-1, idx, chosen_var)
            grad[name] = out.reshape(dist.param(name).shape)
            var[name] = out_var.reshape(dist.param(name).shape)
            weights[name] = w
        value = g1.value
        info = {"components": self.comps, "weight_sf": weights, "first": g1, "second": g2, "plan": self}
        return GradientEstimate(grad, var, value, self.n_evals, values, None, info)


def _running_weight(stats: ComponentStats) -> Tensor:
    """Weights from earlier estimates only (½ where there is no history)."""
    w = min_variance_weight(stats.first.value, stats.second_variance())
    return torch.where(stats.first.known & stats.second_known, w, torch.full_like(w, 0.5))


class CCMVD(_Hybrid):
    """Convex-combined measure-valued derivative (the thesis behind this project).

    Args:
      n_samples: N, antithetic pairs for the score-function estimate of every component (2N evaluations).
      samples_per_dim: M, MVD samples per chosen component (2·M evaluations each).
      k: K, components per parameter that get an MVD estimate.
      select: "variance" (the K with the largest running score-function variance) or "random".
      weights: "running" (from earlier estimates: unbiased) or "batch" (from the current samples: biased,
        needs M ≥ 2).
      antithetic: pairs for the score function; default: whenever the family is symmetric (Normal), otherwise
        2N independent samples.
      baseline: the score function's baseline (leave-one-out by default; with pairs it leaves the pair out).
      decay: of the exponential averages of the variances.

    Costs ``2(N + M·K)`` evaluations per estimated parameter set (K per parameter).
    """

    second_name = "mvd"

    def _check_second(self, dist, names):
        for name in names:
            weak_derivative(dist, name)

    def _second(self, dist, comps):
        return MeasureValued(self.samples_per_dim, coupled=True, dims=comps)


class CCSF(_Hybrid):
    """The control for CCMVD: the same budget spent on a second score-function estimate (M·K antithetic
    pairs per parameter), combined with the first on the chosen K components the same way."""

    second_name = "sf"

    def __init__(self, n_samples: int, samples_per_dim: int, k: int, **kwargs) -> None:
        super().__init__(n_samples, samples_per_dim, k, **kwargs)
        if self.baseline is not None and samples_per_dim * k < 2:
            raise BudgetError(
                f"samples_per_dim·k: CCSF's second score function has M·K antithetic pairs per parameter and its "
                f"baseline needs at least 2; got M·K = {samples_per_dim * k}")

    def _second(self, dist, comps):
        return self._sf(dist, self.samples_per_dim * self.k * len(comps))

    def _second_evals(self, dist, names):
        return 2 * self.samples_per_dim * self.k * len(names)
