"""Measure-valued (weak) derivatives: a registry keyed on (family, parameter), as ``torch.distributions.kl``.

For a factorised family, component ``j`` of parameter θ acts on one coordinate ``i(j)`` of x and

    ∂/∂θ_j p_θ(x) = c_j · (p_j⁺(x_i) − p_j⁻(x_i)) · Π_{l ≠ i} p_θ(x_l),

so ``∂/∂θ_j E f = c_j · (E_{x⁺} f − E_{x⁻} f)`` where x⁺ (x⁻) is a draw from p_θ whose coordinate i was
replaced by a draw from p⁺ (p⁻). A registered sampler returns ``c`` and paired draws of coordinate i from p⁺
and p⁻; with ``coupled=True`` the pair shares every random number it can, which is what makes coupled MVD
low-variance, and with ``coupled=False`` the two draws are independent.

Example::

    @register_weak_derivative(MyFamily, "rate")
    def _my_rate(dist, component, n, generator, coupled):
        ...
        return c, plus, minus     # [J, *batch], [n, J, *batch], [n, J, *batch]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.errors import UnsupportedError

#: (dist, component [J, *batch] long, n, generator, coupled) -> (c [J, *batch], plus [n, J, *batch], minus)
WeakSampler = Callable[[object, Tensor, int, "torch.Generator | None", bool], tuple[Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class WeakDerivative:
    """A registered decomposition: its sampler and a one-line description (shown in docs and errors)."""

    sampler: WeakSampler
    description: str
    #: Whether ``coupled=True`` shares the base draw of coordinate i between p⁺ and p⁻ (else only the other
    #: coordinates are shared).
    couples_coordinate: bool
    #: Which side ("plus" or "minus") is itself distributed as p_θ, if either: its evaluations then also give
    #: an unbiased estimate of E f for free.
    sampled_side: str | None = None


_REGISTRY: dict[tuple[type, str], WeakDerivative] = {}


def register_weak_derivative(family: type, param: str, description: str = "", couples_coordinate: bool = True,
                             sampled_side: str | None = None) -> Callable[[WeakSampler], WeakSampler]:
    """Decorator registering the weak derivative of ``family`` with respect to ``param``."""
    if sampled_side not in (None, "plus", "minus"):
        raise ValueError(f"sampled_side must be None, 'plus' or 'minus'; got {sampled_side!r}")

    def decorator(fn: WeakSampler) -> WeakSampler:
        _REGISTRY[(family, param)] = WeakDerivative(fn, description or (fn.__doc__ or "").strip(),
                                                    couples_coordinate, sampled_side)
        return fn

    return decorator


def find_weak_derivative(family: type, param: str) -> WeakDerivative | None:
    """The decomposition registered for ``family`` (or its nearest base class) and ``param``, or None."""
    for cls in family.__mro__:
        found = _REGISTRY.get((cls, param))
        if found is not None:
            return found
    return None


def weak_derivative(dist: object, param: str) -> WeakDerivative:
    """Like :func:`find_weak_derivative`, but raises a clear error naming the estimators that do work."""
    found = find_weak_derivative(type(dist), param)
    if found is None:
        cls = type(dist)
        others = []
        if param in getattr(cls, "score_params", ()):
            others.append("ScoreFunction")
        if param in getattr(cls, "reparam_params", ()):
            others.append("Pathwise")
        alt = f"; use {' or '.join(others)} for it" if others else ""
        raise UnsupportedError(
            f"MeasureValued has no decomposition for {cls.__name__}.{param}{alt}. Parameters with a "
            f"measure-valued derivative in {cls.__name__}: {supported_params(cls) or 'none'}")
    return found


def supported_params(family: type) -> list[str]:
    """Parameters of ``family`` that have a registered weak derivative."""
    return [p for p in getattr(family, "param_names_all", ()) if find_weak_derivative(family, p) is not None]


def gather_coordinate(t: Tensor, coordinate: Tensor) -> Tensor:
    """Pick ``t[..., coordinate]`` per row: ``t [*batch, D, *rest]``, ``coordinate [J, *batch]`` →
    ``[J, *batch, *rest]``."""
    if coordinate.dim() == 1:                 # no batch: t is [D, *rest]
        return t.index_select(0, coordinate)
    rest = t.shape[coordinate.dim():]  # (D, *rest)
    tt = t.unsqueeze(0).expand(coordinate.shape[0], *t.shape)
    idx = coordinate.reshape(*coordinate.shape, 1, *([1] * (len(rest) - 1)))
    idx = idx.expand(*coordinate.shape, 1, *rest[1:])
    return tt.gather(coordinate.dim(), idx).squeeze(coordinate.dim())
