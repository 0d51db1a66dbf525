"""ARS's top-b antithetic directions (Mania, Guy, Recht 2018) as a plan/combine estimator: biased, marked so.

N antithetic pairs ``μ ± σδ_k`` (δ_k ~ N(0, I)); of these the b pairs with the best ``max(f⁺_k, f⁻_k)`` are kept
and the "gradient" of ``E f`` in the location is

    ĝ = 1/(2σ) · 1/b Σ_{k in top b} (f⁺_k − f⁻_k) δ_k .

With b = N it is the antithetic score function without a baseline (unbiased); with b < N it is *biased* (it
keeps the directions that happened to look best), which is why its registry entry says ``biased=True`` and the
unbiasedness tests skip it by that flag. ARS V2-t's step ``α/(b σ_R) Σ (r⁺ − r⁻) δ`` is ``α · 2σ · ĝ`` on the
returns divided by σ_R, the standard deviation of the 2b returns used: :meth:`ARSPlan.used` says which those are,
so that a caller (the RL trainer) can scale by them without knowing which estimator it runs.

With ``orthogonal=True`` the N directions are orthogonal (in blocks of D when N > D) with the lengths of
Gaussian vectors: each δ_k is still exactly N(0, I), so with b = N the estimate stays unbiased, but the pairs no
longer repeat each other's directions (Choromanski et al. 2018, "Structured evolution with compact architectures
for scalable policy optimization": orthogonal ensembles).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family
from stochgrad.distributions.normal import Normal
from stochgrad.errors import BudgetError, InvalidArgumentError, UnsupportedError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan, resolve_params, sample_variance

BEST = ("max", "min")


class ARS(Estimator):
    """Top-b antithetic directions.

    Args:
      directions: N, antithetic pairs per estimate (2N evaluations).
      top: b ≤ N, the pairs used (default N: the antithetic score function).
      best: "max" keeps the pairs whose better value is largest (f is a return to maximise); "min" keeps those
        whose better value is smallest, for values to minimise (what :class:`~stochgrad.optim.SearchGradient`
        hands its estimator: f, or −f with ``maximize=True``).
      orthogonal: draw the N directions orthogonal to each other (see :func:`orthogonal_gaussian`); False draws
        them independently, as ARS does.

    Estimates the location of a :class:`~stochgrad.Normal` only (``params`` defaults to ``("loc",)``); the
    reported variance is that of the mean of the b kept pairs' terms (for b < N an approximation: the kept
    pairs are not a random sample).

    Example::

        est = ARS(directions=8, top=4)
        g = est.estimate(lambda x: -(x ** 2).sum(-1), Normal(torch.ones(3), 0.1),
                         generator=torch.Generator().manual_seed(0))
        g.grad["loc"]            # points towards 0; g.info["selected"]: the 4 kept pairs

    References: Mania, Guy, Recht (2018), "Simple random search provides a competitive approach to
    reinforcement learning", Algorithm 2 (V2-t).
    """

    def __init__(self, directions: int, top: int | None = None, best: str = "max", orthogonal: bool = False) -> None:
        if not isinstance(directions, int) or isinstance(directions, bool) or directions < 1:
            raise BudgetError(f"directions: ARS needs an int >= 1; got {directions!r}")
        top = directions if top is None else top
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= directions:
            raise InvalidArgumentError(f"top: ARS uses b <= N = {directions} directions; got {top!r} (b >= 1)")
        if best not in BEST:
            raise InvalidArgumentError(f"best: got {best!r}; choose 'max' or 'min'")
        if not isinstance(orthogonal, bool):
            raise InvalidArgumentError(f"orthogonal: need True or False; got {orthogonal!r}")
        self.directions, self.top, self.best, self.orthogonal = directions, top, best, orthogonal

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        return 2 * self.directions

    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> ARSPlan:
        names = ("loc",) if params is None else resolve_params(dist, params)
        if not isinstance(dist, Normal):
            raise UnsupportedError(f"ARS: estimates Normal.loc only; got {type(dist).__name__}."
                                   f"{names[0] if params is not None else dist.param_names[0]}. Use the score "
                                   "function or MeasureValued for other families")
        if names != ("loc",):
            other = next(n for n in names if n != "loc")
            raise UnsupportedError(f"ARS: estimates Normal.loc only; got Normal.{other}. Use the score function "
                                   "or MeasureValued for the scale")
        dist = dist.detach()
        loc, scale = dist.param("loc"), dist.param("scale")
        if self.orthogonal:
            eps = orthogonal_gaussian(self.directions, loc.shape, generator, loc.dtype)
        else:
            _, eps = dist.sample_with_noise((self.directions,), generator)      # δ ~ N(0, I), [N, *batch, D]
        # μ ± σδ written out rather than the family's fused draw, so that the points (and recorded runs) are
        # those of ARS's own formula to the bit.
        points = torch.cat([loc + scale * eps, loc - scale * eps], 0)
        return ARSPlan(dist, points, eps, self.top, self.best)


def orthogonal_gaussian(n: int, shape: Sequence[int] | torch.Size, generator: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float64) -> Tensor:
    """``[n, *shape]`` directions, each exactly N(0, I) over the last axis (length D), orthogonal to each other
    within each copy (the leading axes of ``shape``) and each block of D consecutive rows.

    Gaussian rows are orthonormalised in order (Gram–Schmidt by QR, signs fixed so the frame is Haar) and given
    back their own lengths: row k's length is that of a Gaussian vector and, by rotation invariance, independent
    of its direction, which is uniform; so every row is marginally N(0, I).
    """
    shape = tuple(shape)
    d = shape[-1]
    g = draws.standard_normal((n, *shape), generator, dtype).reshape(n, -1, d)     # [n, M, D]
    out = torch.empty_like(g)
    for start in range(0, n, d):
        block = g[start:start + d]                                             # [k, M, D]
        q, r = torch.linalg.qr(block.permute(1, 2, 0))                         # [M, D, k], [M, k, k]
        sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        q = q * sign.masked_fill(sign == 0, 1.0).unsqueeze(-2)
        out[start:start + d] = q.permute(2, 0, 1) * block.norm(dim=-1, keepdim=True)
    return out.reshape(n, *shape)


class ARSPlan(Plan):
    """The 2N points (``[:N]`` = μ + σδ, ``[N:]`` = μ − σδ) and the top-b combination.

    Attributes:
      eps: the directions δ ``[N, *batch, D]``.
      top, best: b and the sense of "best" (see :class:`ARS`).
    """

    def __init__(self, dist: Family, points: Tensor, eps: Tensor, top: int, best: str = "max") -> None:
        self.dist, self.points, self.eps, self.top, self.best = dist, points, eps, top, best

    def selected(self, values: Tensor) -> Tensor:
        """Indices ``[b, *batch]`` of the kept pairs, ascending, per copy: the b pairs with the best
        ``max(f⁺, f⁻)`` (ties go to the lower index)."""
        v = values if self.best == "max" else -values
        n = self.eps.shape[0]
        better = torch.maximum(v[:n], v[n:])                                    # [N, *batch]
        order = torch.sort(better, dim=0, descending=True, stable=True).indices
        return order[: self.top].sort(dim=0).values

    def used(self, values: Tensor) -> Tensor:
        """Mask ``[2N, *batch]`` of the evaluations the estimate uses: both points of each kept pair."""
        k = self.selected(values)
        half = torch.zeros((self.eps.shape[0], *values.shape[1:]), dtype=torch.bool).scatter_(0, k, True)
        return torch.cat([half, half], 0)

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        n = self.eps.shape[0]
        k = self.selected(values)                                               # [b, *batch]
        diff = (values[:n] - values[n:]).gather(0, k).to(self.eps.dtype)        # [b, *batch]
        eps = self.eps.gather(0, k.unsqueeze(-1).expand(-1, *self.eps.shape[1:]))   # [b, *batch, D]
        two_sigma = 2 * self.dist.param("scale")
        terms = diff.unsqueeze(-1) * eps
        grad = terms.mean(0) / two_sigma
        var = sample_variance(terms / two_sigma)
        return GradientEstimate({"loc": grad}, {"loc": var}, values.mean(0), self.n_evals, values,
                                info={"selected": k})
