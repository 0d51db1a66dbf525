"""Bernoulli(probs p) or Bernoulli(logits z), factorised over the last dimension."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family, boundary_text
from stochgrad.distributions.weak import gather_coordinate, register_weak_derivative
from stochgrad.errors import InvalidArgumentError


class Bernoulli(Family):
    """Independent coin flips in {0, 1}, parameterised by ``probs`` or by ``logits`` (exactly one).

    Args:
      probs: success probabilities ``[*batch, D]`` in [0, 1].
      logits: log-odds ``[*batch, D]``; ``probs = sigmoid(logits)``.
    """

    param_names_all = ("probs", "logits")
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean
    score_params = ("probs", "logits")

    def __init__(self, probs: Tensor | float | None = None, logits: Tensor | float | None = None,
                 validate_args: bool = True) -> None:
        if (probs is None) == (logits is None):
            raise InvalidArgumentError(
                "Bernoulli: give exactly one of 'probs' or 'logits'; got "
                f"{'both' if probs is not None else 'neither'}")
        name = "probs" if probs is not None else "logits"
        self.param_names = (name,)
        super().__init__({name: probs if probs is not None else logits}, validate_args)

    @property
    def probs(self) -> Tensor:
        """Success probabilities (computed from the logits when built from logits, keeping the graph)."""
        return self._params["probs"] if "probs" in self._params else torch.sigmoid(self._params["logits"])

    @property
    def logits(self) -> Tensor:
        return self._params["logits"] if "logits" in self._params else torch.logit(self._params["probs"])

    def _probs(self) -> Tensor:
        return self.probs.detach()

    def _sample(self, shape, generator):
        p = self._probs()
        u = torch.rand((*shape, *p.shape), generator=generator, dtype=p.dtype)
        return (u < p).to(p.dtype)

    def _score(self, x, name):
        p = self._probs()
        if name == "logits":
            return x - p
        return x / p - (1 - x) / (1 - p)

    def score_boundary(self, name: str) -> str | None:
        if name != "probs" or "probs" not in self._params:
            return None                 # with logits p(1 − p) multiplies the score: no 0/0 at the ends
        p = self._p("probs")
        lo, hi = torch.aminmax(p)
        if 0 < float(lo) and float(hi) < 1:
            return None
        return boundary_text(p, (p == 0) | (p == 1), name, "0 (probs 0) or 1 (probs 1)", "the other value")

    def _torch(self):
        return torch.distributions.Bernoulli(probs=self.probs, validate_args=False)


def _bernoulli(dist: Bernoulli, component: Tensor, n: int, generator, coupled: bool, logits: bool):
    p = gather_coordinate(dist._probs(), component)
    ones = torch.ones((n, *p.shape), dtype=p.dtype)
    c = p * (1 - p) if logits else torch.ones_like(p)
    return c, ones, torch.zeros_like(ones)


@register_weak_derivative(Bernoulli, "probs", "c = 1; p⁺ = δ₁; p⁻ = δ₀ (exact, no randomness)")
def _bernoulli_probs(dist, component, n, generator, coupled):
    return _bernoulli(dist, component, n, generator, coupled, logits=False)


@register_weak_derivative(Bernoulli, "logits", "c = p(1 − p); p⁺ = δ₁; p⁻ = δ₀")
def _bernoulli_logits(dist, component, n, generator, coupled):
    return _bernoulli(dist, component, n, generator, coupled, logits=True)
