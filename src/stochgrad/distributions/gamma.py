"""Gamma(concentration α, rate β), factorised over the last dimension."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative


class Gamma(Family):
    """Independent ``Gamma(α_i, β_i)`` draws, density β^α x^(α−1) e^(−βx) / Γ(α) on x > 0.

    Args:
      concentration: shapes α ``[*batch, D]``, > 0.
      rate: rates β ``[*batch, D]``, > 0.

    The measure-valued derivative exists for ``rate`` only; ``concentration`` has the score function and a
    pathwise derivative (implicit reparameterisation, Figurnov et al. 2018).
    """

    param_names = ("concentration", "rate")
    param_names_all = param_names
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.positive
    reparam_params = ("concentration", "rate")
    score_params = ("concentration", "rate")

    def __init__(self, concentration: Tensor | float, rate: Tensor | float, validate_args: bool = True) -> None:
        super().__init__({"concentration": concentration, "rate": rate}, validate_args)

    @property
    def concentration(self) -> Tensor:
        return self._params["concentration"]

    @property
    def rate(self) -> Tensor:
        return self._params["rate"]

    def _sample(self, shape, generator):
        alpha, rate = self._p("concentration"), self._p("rate")
        x = draws.standard_gamma(alpha.expand(*shape, *alpha.shape).contiguous(), generator) / rate
        return x.clamp_min_(torch.finfo(x.dtype).tiny)     # a large rate must not turn a tiny draw into 0

    def _score(self, x, name):
        alpha, rate = self._p("concentration"), self._p("rate")
        if name == "rate":
            return alpha / rate - x
        return torch.log(rate) + torch.log(x) - torch.digamma(alpha)

    def _rsample_jacobian(self, x, name):
        alpha, rate = self._p("concentration"), self._p("rate")
        if name == "rate":
            return -x / rate
        z = (x * rate).contiguous()
        return torch._standard_gamma_grad(alpha.expand_as(z).contiguous(), z) / rate

    def _torch(self):
        return torch.distributions.Gamma(self.concentration, self.rate, validate_args=False)


@register_weak_derivative(Gamma, "rate",
                          "c = α/β; p⁺ = Gamma(α, β); p⁻ = Gamma(α + 1, β); coupled: p⁻ = p⁺ + Exp(β)",
                          sampled_side="plus")
def _gamma_rate(dist: Gamma, component: Tensor, n: int, generator, coupled: bool):
    alpha = gather_coordinate(dist._p("concentration"), component)
    rate = gather_coordinate(dist._p("rate"), component)
    shape = (n, *alpha.shape)
    z = draws.standard_gamma(alpha.expand(shape).contiguous(), generator)
    base = z if coupled else draws.standard_gamma(alpha.expand(shape).contiguous(), generator)
    e = draws.standard_exponential(shape, generator, alpha.dtype)
    tiny = torch.finfo(z.dtype).tiny
    return alpha / rate, (z / rate).clamp_min_(tiny), ((base + e) / rate).clamp_min_(tiny)
