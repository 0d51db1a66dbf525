"""Binomial(total_count n, probs θ), factorised over the last dimension."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family, boundary_text
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative
from stochgrad.errors import InvalidArgumentError


class Binomial(Family):
    """Independent ``Bin(n_i, θ_i)`` counts.

    Args:
      total_count: numbers of trials n ``[*batch, D]`` (a fixed positive integer, not a parameter).
      probs: success probabilities θ ``[*batch, D]`` in [0, 1].
    """

    param_names = ("probs",)
    param_names_all = param_names
    arg_constraints = {"probs": constraints.unit_interval}
    support = constraints.nonnegative_integer
    score_params = ("probs",)

    def __init__(self, total_count: Tensor | int, probs: Tensor | float, validate_args: bool = True) -> None:
        probs_t = probs if isinstance(probs, Tensor) else torch.as_tensor(probs, dtype=torch.get_default_dtype())
        n = torch.as_tensor(total_count, dtype=probs_t.dtype if probs_t.is_floating_point() else None)
        if validate_args and (bool((n < 1).any()) or bool((n != n.round()).any()) or not bool(n.isfinite().all())):
            raise InvalidArgumentError(
                f"Binomial: argument 'total_count' must be a positive integer; got {n.flatten()[:5].tolist()}")
        if n.shape != probs_t.shape:
            try:
                shape = torch.broadcast_shapes(n.shape, probs_t.shape)
            except RuntimeError:
                raise InvalidArgumentError(
                    f"Binomial: 'total_count' and 'probs' must have equal or broadcastable shapes ([*batch, D]); got "
                    f"total_count {list(n.shape)} and probs {list(probs_t.shape)}") from None
            probs_t = probs_t.expand(shape)
        super().__init__({"probs": probs_t}, validate_args)
        self.total_count = n.to(self.dtype).expand(self._params["probs"].shape)

    def _extra_kwargs(self) -> dict:
        return {"total_count": self.total_count}

    @property
    def probs(self) -> Tensor:
        return self._params["probs"]

    def _sample(self, shape, generator):
        p = self._p("probs")
        return draws.binomial(self.total_count.expand(*shape, *p.shape), p.expand(*shape, *p.shape), generator)

    def _score(self, x, name):
        p = self._p("probs")
        return x / p - (self.total_count - x) / (1 - p)

    def score_boundary(self, name: str) -> str | None:
        p = self._p("probs")
        lo, hi = torch.aminmax(p)
        if 0 < float(lo) and float(hi) < 1:
            return None
        return boundary_text(p, (p == 0) | (p == 1), name, "0 (probs 0) or total_count (probs 1)",
                             "the other counts")

    def _torch(self):
        return torch.distributions.Binomial(self.total_count, probs=self.probs, validate_args=False)


@register_weak_derivative(Binomial, "probs",
                          "c = n; p⁺ = 1 + Bin(n − 1, θ); p⁻ = Bin(n − 1, θ); coupled: same Bin(n − 1, θ)")
def _binomial_probs(dist: Binomial, component: Tensor, n: int, generator, coupled: bool):
    p = gather_coordinate(dist._p("probs"), component)
    count = gather_coordinate(dist.total_count, component)
    shape = (n, *p.shape)
    y = draws.binomial((count - 1).expand(shape), p.expand(shape), generator)
    y_minus = y if coupled else draws.binomial((count - 1).expand(shape), p.expand(shape), generator)
    return count, y + 1, y_minus
