"""Geometric(probs θ): the number of failures before the first success, factorised over the last dimension."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family, describe_bad, boundary_text
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative
from stochgrad.errors import InvalidArgumentError


class Geometric(Family):
    """Independent counts with P(k) = (1 − θ)^k θ, k = 0, 1, … (torch's convention).

    Args:
      probs: success probabilities θ ``[*batch, D]`` in (0, 1].
    """

    param_names = ("probs",)
    param_names_all = param_names
    arg_constraints = {"probs": constraints.half_open_interval(0.0, 1.0)}
    support = constraints.nonnegative_integer
    score_params = ("probs",)

    def __init__(self, probs: Tensor | float, validate_args: bool = True) -> None:
        super().__init__({"probs": probs}, validate_args)

    def _validate(self, tensors):
        # (0, 1]: torch has no open-closed interval constraint, so flip the half-open one.
        p = tensors["probs"].detach()
        bad = ~torch.isfinite(p) | (p <= 0) | (p > 1)
        if bool(bad.any()):
            raise InvalidArgumentError(
                f"Geometric: argument 'probs' must satisfy 0 < value <= 1 and be finite; got "
                f"{describe_bad(p, bad)}")

    @property
    def probs(self) -> Tensor:
        return self._params["probs"]

    def _sample(self, shape, generator):
        p = self._p("probs")
        return draws.geometric(p.expand(*shape, *p.shape), generator)

    def _score(self, x, name):
        p = self._p("probs")
        return 1 / p - x / (1 - p)

    def score_boundary(self, name: str) -> str | None:
        p = self._p("probs")
        if float(p.max()) < 1:
            return None
        return boundary_text(p, p >= 1, name, "0", "the counts above 0")

    def _torch(self):
        return torch.distributions.Geometric(probs=self.probs, validate_args=False)


@register_weak_derivative(Geometric, "probs",
                          "c = 1/θ; p⁺ = G; p⁻ = 1 + G + G′ (G, G′ ~ Geom(θ)); coupled: share G",
                          sampled_side="plus")
def _geometric_probs(dist: Geometric, component: Tensor, n: int, generator, coupled: bool):
    p = gather_coordinate(dist._p("probs"), component)
    pp = p.expand(n, *p.shape)
    g = draws.geometric(pp, generator)
    g2 = draws.geometric(pp, generator)
    base = g if coupled else draws.geometric(pp, generator)
    return 1 / p, g, 1 + base + g2
