"""Exponential(rate λ), factorised over the last dimension."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative


class Exponential(Family):
    """Independent ``Exp(rate_i)`` draws, density λ·exp(−λx) on x ≥ 0.

    Args:
      rate: rates ``[*batch, D]``, > 0.
    """

    param_names = ("rate",)
    param_names_all = param_names
    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative
    reparam_params = ("rate",)
    score_params = ("rate",)

    def __init__(self, rate: Tensor | float, validate_args: bool = True) -> None:
        super().__init__({"rate": rate}, validate_args)

    @property
    def rate(self) -> Tensor:
        return self._params["rate"]

    def _sample(self, shape, generator):
        rate = self._p("rate")
        return draws.standard_exponential((*shape, *rate.shape), generator, rate.dtype) / rate

    def _score(self, x, name):
        return 1 / self._p("rate") - x

    def _rsample_jacobian(self, x, name):
        return -x / self._p("rate")

    def _torch(self):
        return torch.distributions.Exponential(self.rate, validate_args=False)


@register_weak_derivative(Exponential, "rate",
                          "c = 1/λ; p⁺ = Exp(λ); p⁻ = Gamma(2, λ); coupled: p⁻ = p⁺ + independent Exp(λ)",
                          sampled_side="plus")
def _exponential_rate(dist: Exponential, component: Tensor, n: int, generator, coupled: bool):
    rate = gather_coordinate(dist._p("rate"), component)
    shape = (n, *rate.shape)
    e1 = draws.standard_exponential(shape, generator, rate.dtype)
    e2 = draws.standard_exponential(shape, generator, rate.dtype)
    first = e1 if coupled else draws.standard_exponential(shape, generator, rate.dtype)
    return 1 / rate, e1 / rate, (first + e2) / rate
