"""Structured functions that estimators can exploit without changing their results.

A :class:`Separable` f(x) = Σ_i term(x_i, i) tells the estimators how its value changes when one coordinate
changes. Coupled MVD evaluates f on points that differ from a shared base in a single coordinate, so for a
separable f it never needs those points: f(x⁺) = f(base) − term(base_i, i) + term(y⁺, i). The base draws are
still made (in the same chunks and order as the general path, so the generator advances identically and the
values are the same up to rounding), but each chunk is reduced as soon as it is drawn: memory O(chunk) instead
of O(M·D²), and about half the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class Separable:
    """f(x) = Σ_i term(x_i, i).

    Args:
      term: ``(values [..., K], index [..., K] or [K] int64) -> [..., K]``, the contribution of coordinate
        ``index`` at the given value; it must broadcast over leading dimensions.
      name: shown in ``repr``.

    Example::

        sphere = Separable(lambda v, i: v * v)
        weighted = Separable(lambda v, i: w[i] * v * v)         # w: [D]
        sphere(torch.ones(5, 3))                                 # tensor([3., 3., 3., 3., 3.])
    """

    def __init__(self, term: Callable[[Tensor, Tensor], Tensor], name: str = "separable") -> None:
        self.coordinate_term = term
        self.name = name

    def __call__(self, x: Tensor) -> Tensor:
        index = torch.arange(x.shape[-1], device=x.device)
        return self.coordinate_term(x, index).sum(-1)

    def __repr__(self) -> str:
        return f"Separable({self.name})"


def is_separable(f: object) -> bool:
    """Whether f declares per-coordinate terms (a :class:`Separable`, or anything with ``coordinate_term``)."""
    return callable(getattr(f, "coordinate_term", None))
