"""The score-function (REINFORCE, likelihood-ratio) estimator."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.errors import BudgetError, UnsupportedError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan, resolve_params, sample_variance
from stochgrad.estimators.baselines import check_baseline, compute_baseline


class ScoreFunction(Estimator):
    """``∇_θ E f ≈ 1/N Σ_n (f(x_n) − b_n) ∇_θ log p_θ(x_n)``, x_n ~ p_θ.

    Args:
      n_samples: N, the evaluations of f per estimate.
      baseline: None, "mean" (biased by (N − 1)/N), "loo" (leave-one-out mean, unbiased) or "optimal"
        (per-component ``E[f s²]/E[s²]`` from the other samples, unbiased).
      antithetic: draw N/2 pairs (x, 2μ − x); only for families symmetric about their location (Normal).
        Leave-one-out baselines then leave out the whole pair, which keeps them unbiased.

    Costs N evaluations and gives every parameter's gradient from the same samples. Valid for every parameter
    whose support does not move with it (not Uniform's ends).

    Example::

        est = ScoreFunction(n_samples=20, baseline="loo")
        g = est.estimate(lambda x: (x ** 2).sum(-1), Normal(torch.zeros(3), torch.ones(3)),
                         generator=torch.Generator().manual_seed(0))

    References: Williams (1992); Mohamed, Rosca, Figurnov, Mnih (2020) §4; Kool, van Hoof, Welling (2019)
    for the leave-one-out baseline.
    """

    def __init__(self, n_samples: int, baseline: str | None = None, antithetic: bool = False) -> None:
        if not isinstance(n_samples, int) or isinstance(n_samples, bool):
            raise BudgetError(f"n_samples must be an int; got {n_samples!r}")
        self.n_samples = n_samples
        self.baseline = check_baseline(baseline)
        self.antithetic = bool(antithetic)
        minimum = self.min_samples(baseline, antithetic)
        if n_samples < minimum:
            why = {None: "", "mean": " with a mean baseline", "loo": " with a leave-one-out baseline",
                   "optimal": " with the optimal baseline"}[baseline]
            raise BudgetError(
                f"n_samples: ScoreFunction{why}{' and antithetic pairs' if antithetic else ''} needs at least "
                f"{minimum} evaluations; got {n_samples}")
        if antithetic and n_samples % 2:
            raise BudgetError(f"n_samples: antithetic pairs need an even number of evaluations; got {n_samples}")

    @staticmethod
    def min_samples(baseline: str | None, antithetic: bool = False) -> int:
        """The smallest N that gives an estimate with this baseline."""
        unit = 2 if antithetic else 1
        return unit if baseline is None else 2 * unit

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        return self.n_samples

    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> ScoreFunctionPlan:
        names = resolve_params(dist, params)
        check_score_params(dist, names)
        dist = dist.detach()
        n = self.n_samples // 2 if self.antithetic else self.n_samples
        if self.antithetic and not dist.symmetric:
            raise UnsupportedError(
                f"antithetic: pairs (x, 2μ − x) need a family symmetric about its location (Normal); "
                f"got {type(dist).__name__}")
        x, noise = dist.sample_with_noise((n,), generator)
        pair_of = None
        if self.antithetic:
            x = torch.cat([x, dist.reflect(x)], 0)
            noise = torch.cat([noise, -noise], 0) if noise is not None else None
            pair_of = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        # The score terms are computed now, before f sees the points: an f that edits them in place cannot
        # change the estimate, and the work is the same as in combine.
        terms = {name: dist.score_terms(x, noise, name) for name in names}
        return ScoreFunctionPlan(dist, x, names, self.baseline, pair_of, terms)


def check_score_params(dist: Family, names: Sequence[str]) -> None:
    """Raise :class:`UnsupportedError` for any of ``names`` the score function is not valid for: a parameter
    that moves the support, or one at the end of its range (Bernoulli probs 0 or 1, Geometric probs 1)."""
    for name in names:
        if name not in dist.score_params:
            dist.score(dist.sample((1,)), name)  # raises the explanatory error
        why = dist.score_boundary(name)
        if why is not None:
            raise UnsupportedError(
                f"the score function (ScoreFunction, and CCMVD and CCSF, which build on it) is not valid for "
                f"{type(dist).__name__}.{name} here: {why}. Use MeasureValued or Auto, which give that one-sided "
                f"gradient exactly, or keep '{name}' inside its range")


def _weighted_sum(w: Tensor, t: Tensor) -> Tensor:
    """Σ_n w_n t_n for ``w [N, *batch]``, ``t [N, *batch, *comp]`` → ``[*batch, *comp]`` (one batched matvec)."""
    if w.dim() == 1:
        return w @ t if t.dim() == 2 else (w @ t.reshape(t.shape[0], -1)).reshape(t.shape[1:])
    n = w.shape[0]
    lead = w.shape[1:]
    out = torch.einsum("nb,nbc->bc", w.reshape(n, -1), t.reshape(n, w[0].numel(), -1))
    return out.reshape(*lead, *t.shape[w.dim():])


class ScoreFunctionPlan(Plan):
    """Points x_n ~ p_θ (or antithetic pairs) and the recipe of :class:`ScoreFunction`."""

    def __init__(self, dist: Family, points: Tensor, params: tuple[str, ...], baseline: str | None,
                 pair_of: Tensor | None, terms: dict[str, tuple[Tensor, Tensor | float, float, int]]) -> None:
        self.dist, self.points, self.params, self.baseline, self.pair_of = dist, points, params, baseline, pair_of
        #: Per parameter, the score as a·(T − c) with its parity (:meth:`Family.score_terms`), from the draws.
        self.terms = terms

    def score(self, name: str) -> Tensor:
        """The score of parameter ``name`` at the drawn points, ``[N, *batch, *components]``."""
        t, a, c, _ = self.terms[name]
        if c != 0:
            return a * (t - c)
        return t if isinstance(a, float) and a == 1.0 else a * t

    def contributions(self, values: Tensor, name: str) -> Tensor:
        """Per-sample terms ``(f_n − b_n) s_n`` for parameter ``name``: ``[N, *batch, *components]``."""
        s = self.score(name)
        b = compute_baseline(self.baseline, values, s, self.pair_of)
        extra = s.dim() - values.dim()
        v = values.reshape(*values.shape, *([1] * extra))
        return (v - b) * s

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        if self.baseline == "optimal":
            return self._combine_elementwise(values)
        # A baseline shared by all components: the estimate is Σ_n w_n s_n / N with w = f − b, computed as
        # batched matrix-vector products without forming the N × D contributions; the score is a(T − c) with
        # T what the family has at hand (the standard normal draws for a Normal).
        w = values - compute_baseline(self.baseline, values, values, self.pair_of)
        grad, var = {}, {}
        for name in self.params:
            t, a, c, parity = self.terms[name]
            if self.pair_of is not None:
                half = w.shape[0] // 2
                w_eff = 0.5 * (w[:half] + parity * w[half:])    # pair means: s(x') = parity · s(x)
                t = t[:half]
            else:
                w_eff = w
            n = w_eff.shape[0]
            s1 = _weighted_sum(w_eff, t)
            w2 = w_eff * w_eff
            if c != 0:
                s1 = s1 - c * w_eff.sum(0).reshape(*w_eff.shape[1:], *([1] * (t.dim() - w_eff.dim())))
            g = (a / n) * s1
            grad[name] = g
            if n < 2:
                var[name] = torch.full_like(g, float("nan"))
                continue
            m2 = _weighted_sum(w2, t * t)
            if c != 0:
                w2_sum = w2.sum(0).reshape(*w2.shape[1:], *([1] * (t.dim() - w2.dim())))
                m2 = m2 - 2 * c * _weighted_sum(w2, t) + c * c * w2_sum
            # (a² m2 − n g²) / ((n − 1) n) with n g² = a² s1² / n
            var[name] = (a * a / ((n - 1) * n)) * torch.addcmul(m2, s1, s1, value=-1.0 / n).clamp_min_(0)
        return GradientEstimate(grad, var, values.mean(0), self.n_evals, values)

    def _combine_elementwise(self, values: Tensor) -> GradientEstimate:
        grad, var = {}, {}
        for name in self.params:
            h = self.contributions(values, name)
            grad[name] = h.mean(0)
            if self.pair_of is not None:
                half = h.shape[0] // 2
                h = 0.5 * (h[:half] + h[half:])   # independent pair means
            var[name] = sample_variance(h)
        return GradientEstimate(grad, var, values.mean(0), self.n_evals, values)
