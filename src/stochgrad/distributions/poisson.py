"""Poisson(rate λ), factorised over the last dimension."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative


class Poisson(Family):
    """Independent counts ``Poisson(rate_i)``.

    Args:
      rate: rates ``[*batch, D]``, > 0.
    """

    param_names = ("rate",)
    param_names_all = param_names
    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative_integer
    score_params = ("rate",)

    def __init__(self, rate: Tensor | float, validate_args: bool = True) -> None:
        super().__init__({"rate": rate}, validate_args)

    @property
    def rate(self) -> Tensor:
        return self._params["rate"]

    def _sample(self, shape, generator):
        rate = self._p("rate")
        return draws.poisson(rate.expand(*shape, *rate.shape), generator)

    def _score(self, x, name):
        return x / self._p("rate") - 1

    def _torch(self):
        return torch.distributions.Poisson(self.rate, validate_args=False)


@register_weak_derivative(Poisson, "rate", "c = 1; p⁺ = X + 1; p⁻ = X; coupled: same X ~ Poisson(λ)",
                          sampled_side="minus")
def _poisson_rate(dist: Poisson, component: Tensor, n: int, generator, coupled: bool):
    rate = gather_coordinate(dist._p("rate"), component).expand(n, *component.shape)
    x = draws.poisson(rate, generator)
    x_minus = x if coupled else draws.poisson(rate, generator)
    return torch.ones_like(rate[0]), x + 1, x_minus
