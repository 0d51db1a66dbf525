"""The pathwise (reparameterisation) estimator for differentiable f."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.errors import BudgetError, UnsupportedError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan, resolve_params, sample_variance


class Pathwise(Estimator):
    """``∇_θ E f ≈ 1/N Σ_n ∇_x f(x_n) · ∂x_n/∂θ`` with x_n = g(θ, ε_n) reparameterised.

    f must be differentiable torch code that evaluates each point of the batch independently; the plan's
    points require grad and ``combine`` differentiates the values with respect to them. Because the
    families are factorised, ``∂x_n/∂θ`` is elementwise, so the per-sample contributions (and from them the
    variance estimate) come from a single backward pass.

    Args:
      n_samples: N, the evaluations of f (each with one backward pass) per estimate.

    Supported: Normal (loc, scale), Exponential (rate), Gamma (concentration by implicit
    reparameterisation, rate), Uniform (low, high). Discrete families have no pathwise derivative.

    References: Kingma and Welling (2014); Figurnov, Mohamed, Mnih (2018); Mohamed et al. (2020) §5.
    """

    def __init__(self, n_samples: int) -> None:
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
            raise BudgetError(f"n_samples: Pathwise needs at least 1 evaluation; got {n_samples!r}")
        self.n_samples = n_samples

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        return self.n_samples

    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> PathwisePlan:
        names = resolve_params(dist, params)
        for name in names:
            if name not in dist.reparam_params:
                others = ["ScoreFunction"] if name in dist.score_params else []
                others.append("MeasureValued")
                raise UnsupportedError(
                    f"Pathwise: {type(dist).__name__}.{name} has no pathwise (reparameterisation) derivative; "
                    f"use {' or '.join(others)}")
        dist = dist.detach()
        x = dist.sample((self.n_samples,), generator)
        return PathwisePlan(dist, x, names)


class PathwisePlan(Plan):
    """Reparameterised draws that require grad; ``combine`` needs values that carry gradient to them."""

    requires_grad_values = True

    def __init__(self, dist: Family, draws: Tensor, params: tuple[str, ...]) -> None:
        self.dist, self.params = dist, params
        self.draws = draws.requires_grad_(True)
        #: What f is given: a differentiable copy of the draws, so that an f that edits its points in place
        #: changes neither the draws nor the Jacobian computed from them (in-place edits of a leaf that
        #: requires grad would also be refused by autograd).
        self.points = draws.clone()

    def _combine(self, values: Tensor) -> GradientEstimate:
        (grad_x,) = torch.autograd.grad(values.sum(), self.draws, allow_unused=True)
        if grad_x is None:
            grad_x = torch.zeros_like(self.draws)
        x = self.draws.detach()
        grad, var = {}, {}
        for name in self.params:
            h = grad_x * self.dist.rsample_jacobian(x, name)
            grad[name] = h.mean(0)
            var[name] = sample_variance(h)
        values = values.detach()
        return GradientEstimate(grad, var, values.mean(0), self.n_evals, values)
