"""ARS's top-b directions (Mania, Guy, Recht 2018) as a plan/combine estimator, for the RL trainer.

N antithetic pairs ``μ ± σδ_k`` (δ_k ~ N(0, I)); of these the b pairs with the largest ``max(f⁺_k, f⁻_k)`` are
kept and the "gradient" is

    ĝ = 1/(2σ) · 1/b Σ_{k in top b} (f⁺_k − f⁻_k) δ_k ,

so that the trainer's step ``α · 2σ · ĝ`` is ARS's ``α/b Σ (r⁺ − r⁻) δ``. With b = N it is the antithetic
score function without a baseline; with b < N it is *biased* (it keeps the directions that happened to look
best), which is why it lives here, as a named option of the trainer, and not in the library's registry of
estimators. ARS V2's division by σ_R, the standard deviation of the 2b returns used, is done by the trainer
(:func:`ars_used` says which values those are).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan, resolve_params


class ARS(Estimator):
    """Top-b antithetic directions.

    Args:
      directions: N, antithetic pairs per estimate (2N evaluations).
      top: b ≤ N, the pairs used.
      best: "max" keeps the pairs whose better value is largest (f is a return to maximise); "min" keeps those
        whose better value is smallest, for a caller that hands in values to minimise (such as
        :class:`~stochgrad.optim.SearchGradient` with ``maximize=True``, which passes −f).

    Estimates the location of a Normal only (``params`` defaults to ``("loc",)``).
    """

    def __init__(self, directions: int, top: int | None = None, best: str = "max") -> None:
        if not isinstance(directions, int) or isinstance(directions, bool) or directions < 1:
            raise BudgetError(f"directions: ARS needs an int >= 1; got {directions!r}")
        top = directions if top is None else top
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= directions:
            raise InvalidArgumentError(f"top: ARS uses 1 <= b <= N = {directions} directions; got {top!r}")
        if best not in ("max", "min"):
            raise InvalidArgumentError(f"best: got {best!r}; choose 'max' or 'min'")
        self.directions, self.top, self.best = directions, top, best

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        return 2 * self.directions

    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> ARSPlan:
        names = ("loc",) if params is None else resolve_params(dist, params)
        if names != ("loc",) or type(dist).__name__ != "Normal" or dist.batch_shape != torch.Size():
            raise InvalidArgumentError(f"ARS: perturbs the location of one Normal; got {type(dist).__name__} "
                                       f"with params {list(names)} and batch shape {list(dist.batch_shape)}")
        dist = dist.detach()
        loc, scale = dist.param("loc"), dist.param("scale")
        eps = torch.randn((self.directions, *loc.shape), generator=generator, dtype=loc.dtype)
        points = torch.cat([loc + scale * eps, loc - scale * eps], 0)
        return ARSPlan(dist, points, eps, self.top, self.best)


class ARSPlan(Plan):
    """The 2N points (``[:N]`` = μ + σδ, ``[N:]`` = μ − σδ) and the top-b combination."""

    def __init__(self, dist: Family, points: Tensor, eps: Tensor, top: int, best: str = "max") -> None:
        self.dist, self.points, self.eps, self.top, self.best = dist, points, eps, top, best

    def selected(self, values: Tensor) -> Tensor:
        """Indices ``[b]`` of the kept pairs (ascending)."""
        v = values if self.best == "max" else -values
        return ars_used(v, self.top)[: self.eps.shape[0]].nonzero().flatten()

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        n = self.eps.shape[0]
        k = self.selected(values)
        diff = (values[:n] - values[n:])[k].to(self.eps.dtype)
        scale = self.dist.param("scale")
        grad = (diff.unsqueeze(-1) * self.eps[k]).mean(0) / (2 * scale)
        var = torch.full_like(grad, float("nan"))
        return GradientEstimate({"loc": grad}, {"loc": var}, values.mean(0), self.n_evals, values,
                                info={"selected": k})


def ars_used(values: Tensor, top: int) -> Tensor:
    """Boolean mask ``[2N]`` of the returns ARS's step uses: both points of the ``top`` pairs with the largest
    ``max(f⁺, f⁻)``; ``values`` are ``[2N]`` with ``[:N]`` the + points."""
    n = values.shape[0] // 2
    best = torch.maximum(values[:n], values[n:])
    order = sorted(range(n), key=lambda k: (-float(best[k]), k))
    k = torch.tensor(order[:top], dtype=torch.long)
    mask = torch.zeros(2 * n, dtype=torch.bool)
    mask[k] = True
    mask[k + n] = True
    return mask
