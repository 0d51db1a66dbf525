"""Discrete test problems with interacting f and an exact gradient: Bernoulli, Categorical and Poisson.

Each :class:`DiscreteProblem` knows ``E f`` as differentiable torch code of the family's parameter, so autograd
gives the exact gradient an estimator should hit (closed forms from the independence of the coordinates).
All of them couple every coordinate to every other, so that a per-coordinate MVD difference carries the other
coordinates' noise.

Example::

    p = DISCRETE["bernoulli-square"]
    dist = p.dist(dim=10, copies=100)        # 100 independent copies
    exact = p.exact(dim=10)                  # [10] (Categorical: [10·K])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.distributions.bernoulli import Bernoulli
from stochgrad.distributions.categorical import Categorical
from stochgrad.distributions.poisson import Poisson

T = torch.float64
K = 3          # categories per coordinate of the Categorical problem


def _weights(d: int) -> Tensor:
    return torch.linspace(1.0, 2.0, d, dtype=T) / math.sqrt(d) if d > 1 else torch.ones(1, dtype=T)


def _point(d: int, lo: float, hi: float, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(1_000_003 * seed + d)
    return lo + (hi - lo) * torch.rand(d, generator=gen, dtype=T)


@dataclass(frozen=True)
class DiscreteProblem:
    """E f under a factorised discrete family, exactly.

    Attributes:
      name: registry name.
      param: the parameter whose gradient is estimated.
      f: ``[..., D] -> [...]`` (the points as the family draws them).
      expected: ``(parameter [D] or [D, K]) -> E f`` (a 0-dim tensor), differentiable.
      make: ``parameter -> family``.
      point: ``D -> the parameter`` at which gradients are measured (seeded).
    """

    name: str
    param: str
    f: Callable[[Tensor], Tensor]
    expected: Callable[[Tensor], Tensor]
    make: Callable[[Tensor], Family]
    point: Callable[[int], Tensor]

    def dist(self, dim: int, copies: int | None = None) -> Family:
        theta = self.point(dim)
        if copies is not None:
            theta = theta.expand(copies, *theta.shape).clone()
        return self.make(theta)

    def exact(self, dim: int) -> Tensor:
        """The exact gradient at :attr:`point`, flattened: ``[D]`` (``[D·K]`` for Categorical logits)."""
        theta = self.point(dim).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.expected(theta), theta)
        return g.flatten()


# -- Bernoulli(probs): (w·x − 1)², a square of a weighted sum ------------------------------------------------
def _bern_square(x: Tensor) -> Tensor:
    return 4 * ((x.to(T) * _weights(x.shape[-1])).sum(-1) - 1) ** 2


def _bern_square_expected(p: Tensor) -> Tensor:
    w = _weights(p.shape[-1])
    return 4 * (((w * p).sum() - 1) ** 2 + (w * w * p * (1 - p)).sum())


# -- Bernoulli(probs): Π (1 + x_i) / 2^{D/2}, a product of every coordinate -----------------------------------
def _bern_product(x: Tensor) -> Tensor:
    return (1 + x.to(T)).prod(-1) / 2 ** (x.shape[-1] / 2)


def _bern_product_expected(p: Tensor) -> Tensor:
    return (1 + p).prod() / 2 ** (p.shape[-1] / 2)


# -- Categorical(logits [D, K]): (Σ_i v_{i, x_i})², v a fixed table ---------------------------------------------
def _table(d: int) -> Tensor:
    gen = torch.Generator().manual_seed(7 + d)
    return torch.randn(d, K, generator=gen, dtype=T) * 2 / math.sqrt(d)


def _cat_square(x: Tensor) -> Tensor:
    d = x.shape[-1]
    v = _table(d)
    vals = v[torch.arange(d), x.long()]                  # [..., D]
    return (vals.sum(-1) + 0.5) ** 2


def _cat_square_expected(logits: Tensor) -> Tensor:
    v = _table(logits.shape[0])
    p = torch.softmax(logits, -1)
    mean = (p * v).sum(-1)
    var = (p * v * v).sum(-1) - mean ** 2
    return (mean.sum() + 0.5) ** 2 + var.sum()


# -- Poisson(rate): exp(−w·x), whose expectation is a product of Poisson generating functions ---------------
def _pois_exp(x: Tensor) -> Tensor:
    return 10 * torch.exp(-(x.to(T) * _weights(x.shape[-1])).sum(-1))


def _pois_exp_expected(rate: Tensor) -> Tensor:
    w = _weights(rate.shape[-1])
    return 10 * torch.exp((rate * (torch.exp(-w) - 1)).sum())


# -- Poisson(rate): (w·x − w·λ₀)², held out ------------------------------------------------------------------
def _pois_square(x: Tensor) -> Tensor:
    d = x.shape[-1]
    return ((x.to(T) - 1.5) * _weights(d)).sum(-1) ** 2


def _pois_square_expected(rate: Tensor) -> Tensor:
    w = _weights(rate.shape[-1])
    return ((rate - 1.5) * w).sum() ** 2 + (w * w * rate).sum()


DISCRETE: dict[str, DiscreteProblem] = {p.name: p for p in [
    DiscreteProblem("bernoulli-square", "probs", _bern_square, _bern_square_expected,
                    lambda p: Bernoulli(probs=p), lambda d: _point(d, 0.2, 0.8)),
    DiscreteProblem("bernoulli-product", "probs", _bern_product, _bern_product_expected,
                    lambda p: Bernoulli(probs=p), lambda d: _point(d, 0.2, 0.8)),
    DiscreteProblem("categorical-square", "logits", _cat_square, _cat_square_expected,
                    lambda z: Categorical(z), lambda d: _point(d * K, -1.0, 1.0).reshape(d, K)),
    DiscreteProblem("poisson-exp", "rate", _pois_exp, _pois_exp_expected,
                    lambda r: Poisson(r), lambda d: _point(d, 0.5, 2.0)),
    DiscreteProblem("poisson-square", "rate", _pois_square, _pois_square_expected,
                    lambda r: Poisson(r), lambda d: _point(d, 0.5, 2.0)),
]}

#: Held out when Auto was designed.
HELD_OUT = ("bernoulli-product", "poisson-square")
