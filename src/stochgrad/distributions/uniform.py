"""Uniform(low a, high θ), factorised over the last dimension."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family, describe_bad
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative
from stochgrad.errors import InvalidArgumentError


class Uniform(Family):
    """Independent ``U[low_i, high_i]`` draws.

    Args:
      high: upper ends θ ``[*batch, D]``.
      low: lower ends ``[*batch, D]``, default 0; must be < high.

    The support moves with both parameters, so the score function is not valid for them; the measure-valued
    and pathwise derivatives are.
    """

    param_names = ("low", "high")
    param_names_all = param_names
    arg_constraints = {"low": constraints.real, "high": constraints.real}
    support = constraints.real
    reparam_params = ("low", "high")
    score_params = ()

    def __init__(self, high: Tensor | float, low: Tensor | float = 0.0, validate_args: bool = True) -> None:
        super().__init__({"low": low, "high": high}, validate_args)

    def _validate(self, tensors):
        super()._validate(tensors)
        low, high = torch.broadcast_tensors(tensors["low"].detach(), tensors["high"].detach())
        bad = ~(high > low)
        if bool(bad.any()):
            raise InvalidArgumentError(
                f"Uniform: argument 'high' must be greater than 'low'; got high {describe_bad(high, bad)} "
                f"with low {low[tuple(int(i) for i in bad.nonzero()[0])].item()!r}")

    @property
    def low(self) -> Tensor:
        return self._params["low"]

    @property
    def high(self) -> Tensor:
        return self._params["high"]

    def _sample(self, shape, generator):
        low, high = self._p("low"), self._p("high")
        u = torch.rand((*shape, *low.shape), generator=generator, dtype=low.dtype)
        return low + (high - low) * u

    def _rsample_jacobian(self, x, name):
        low, high = self._p("low"), self._p("high")
        u = (x - low) / (high - low)
        return u if name == "high" else 1 - u

    def _torch(self):
        return torch.distributions.Uniform(self.low, self.high, validate_args=False)


@register_weak_derivative(Uniform, "high", "c = 1/(θ − a); p⁺ = δ_θ; p⁻ = U[a, θ]", couples_coordinate=False,
                          sampled_side="minus")
def _uniform_high(dist: Uniform, component: Tensor, n: int, generator, coupled: bool):
    low = gather_coordinate(dist._p("low"), component)
    high = gather_coordinate(dist._p("high"), component)
    u = torch.rand((n, *low.shape), generator=generator, dtype=low.dtype)
    return 1 / (high - low), high.expand(n, *high.shape), low + (high - low) * u


@register_weak_derivative(Uniform, "low", "c = 1/(θ − a); p⁺ = U[a, θ]; p⁻ = δ_a", couples_coordinate=False,
                          sampled_side="plus")
def _uniform_low(dist: Uniform, component: Tensor, n: int, generator, coupled: bool):
    low = gather_coordinate(dist._p("low"), component)
    high = gather_coordinate(dist._p("high"), component)
    u = torch.rand((n, *low.shape), generator=generator, dtype=low.dtype)
    return 1 / (high - low), low + (high - low) * u, low.expand(n, *low.shape)
