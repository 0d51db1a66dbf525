"""Normal(loc μ, scale σ), factorised over the last dimension."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative


class Normal(Family):
    """Independent Gaussians ``N(loc_i, scale_i²)``.

    Args:
      loc: means ``[*batch, D]``.
      scale: standard deviations ``[*batch, D]`` (broadcast against ``loc``), > 0.
      validate_args: check finiteness and positivity at construction.

    Example::

        dist = Normal(torch.zeros(3), torch.ones(3))
        x = dist.sample(5, generator=torch.Generator().manual_seed(0))   # [5, 3]
    """

    param_names = ("loc", "scale")
    param_names_all = param_names
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    reparam_params = ("loc", "scale")
    score_params = ("loc", "scale")
    symmetric = True

    def __init__(self, loc: Tensor | float, scale: Tensor | float, validate_args: bool = True) -> None:
        super().__init__({"loc": loc, "scale": scale}, validate_args)

    @property
    def loc(self) -> Tensor:
        return self._params["loc"]

    @property
    def scale(self) -> Tensor:
        return self._params["scale"]

    def _sample(self, shape, generator):
        loc, scale = self._p("loc"), self._p("scale")
        eps = draws.standard_normal((*shape, *loc.shape), generator, loc.dtype)
        return torch.addcmul(loc, scale, eps)

    def sample_into(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if out.dtype != self.dtype:
            return super().sample_into(out, generator)
        with torch.no_grad():
            torch.randn(out.shape, generator=generator, dtype=out.dtype, out=out)
            return out.mul_(self._p("scale")).add_(self._p("loc"))

    def sample_with_noise(self, sample_shape=(), generator=None):
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        loc, scale = self._p("loc"), self._p("scale")
        eps = draws.standard_normal((*shape, *loc.shape), generator, loc.dtype)
        return torch.addcmul(loc, scale, eps), eps

    def score_terms(self, x, noise, name):
        if name not in ("loc", "scale"):
            return super().score_terms(x, noise, name)
        if noise is None:
            noise = (x - self._p("loc")) / self._p("scale")
        inv = self._p("scale").reciprocal()
        if name == "loc":
            return noise, inv, 0.0, -1          # s = ε/σ, odd under x → 2μ − x
        return noise * noise, inv, 1.0, 1       # s = (ε² − 1)/σ, even

    def reflect(self, x: Tensor) -> Tensor:
        return 2 * self._p("loc") - x

    def _score(self, x, name):
        loc, scale = self._p("loc"), self._p("scale")
        z = (x - loc) / scale
        if name == "loc":
            return z / scale
        return (z * z - 1) / scale

    def _rsample_jacobian(self, x, name):
        if name == "loc":
            return torch.ones_like(x)
        return (x - self._p("loc")) / self._p("scale")

    def _torch(self):
        return torch.distributions.Normal(self.loc, self.scale, validate_args=False)


@register_weak_derivative(Normal, "loc", "c = 1/(σ√(2π)); p± = μ ± σ·R, R ~ Rayleigh(1); coupled: same R")
def _normal_loc(dist: Normal, component: Tensor, n: int, generator, coupled: bool):
    mu = gather_coordinate(dist._p("loc"), component)
    sigma = gather_coordinate(dist._p("scale"), component)
    shape = (n, *mu.shape)
    step_plus = sigma * draws.rayleigh(shape, generator, mu.dtype)
    step_minus = step_plus if coupled else sigma * draws.rayleigh(shape, generator, mu.dtype)
    c = (sigma * math.sqrt(2 * math.pi)).reciprocal()
    return c, mu + step_plus, mu - step_minus


@register_weak_derivative(
    Normal, "scale",
    "c = 1/σ; p⁺ = μ + σ·M, M double-sided Maxwell; p⁻ = N(μ, σ²); coupled: p⁻ = μ + σ·M·U, U ~ U(0, 1)",
    sampled_side="minus")
def _normal_scale(dist: Normal, component: Tensor, n: int, generator, coupled: bool):
    mu = gather_coordinate(dist._p("loc"), component)
    sigma = gather_coordinate(dist._p("scale"), component)
    shape = (n, *mu.shape)
    m = draws.double_sided_maxwell(shape, generator, mu.dtype)
    if coupled:
        minus = draws.uniform(shape, generator, mu.dtype).mul_(m)  # M·U is N(0, 1)
    else:
        minus = draws.standard_normal(shape, generator, mu.dtype)
    return sigma.reciprocal(), mu + sigma * m, mu + sigma * minus
