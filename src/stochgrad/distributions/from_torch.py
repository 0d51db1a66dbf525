"""Conversion of ``torch.distributions`` objects to stochgrad families.

``from_torch(torch.distributions.Normal(loc, scale))`` is ``Normal(loc, scale)``: the same tensors, so gradients
still flow to whatever produced them. Estimators and :func:`~stochgrad.expectation` convert automatically
(:func:`as_family`); anything else they are given raises an error that says what to pass.

Example::

    d = torch.distributions.Independent(torch.distributions.Bernoulli(logits=z), 1)
    dist = from_torch(d)            # Bernoulli(logits=z), factorised over the last dimension
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import distributions as td

from stochgrad.distributions.base import Family
from stochgrad.distributions.bernoulli import Bernoulli
from stochgrad.distributions.binomial import Binomial
from stochgrad.distributions.categorical import Categorical
from stochgrad.distributions.exponential import Exponential
from stochgrad.distributions.gamma import Gamma
from stochgrad.distributions.geometric import Geometric
from stochgrad.distributions.normal import Normal
from stochgrad.distributions.poisson import Poisson
from stochgrad.distributions.uniform import Uniform
from stochgrad.errors import InvalidArgumentError


def _given(d: td.Distribution, a: str, b: str) -> str:
    """Which of two lazily linked parameters (probs/logits) the torch distribution was built from."""
    param = getattr(d, "_param", None)
    return b if param is not None and param is vars(d).get(b) else a


def _bernoulli(d: td.Bernoulli) -> Family:
    return Bernoulli(logits=d.logits) if _given(d, "probs", "logits") == "logits" else Bernoulli(probs=d.probs)


#: torch.distributions type -> converter; exact types only (a subclass may change the distribution).
CONVERTERS: dict[type, Callable[[td.Distribution], Family]] = {
    td.Normal: lambda d: Normal(d.loc, d.scale),
    td.Bernoulli: _bernoulli,
    td.Categorical: lambda d: Categorical(d.logits),
    td.Poisson: lambda d: Poisson(d.rate),
    td.Exponential: lambda d: Exponential(d.rate),
    td.Gamma: lambda d: Gamma(d.concentration, d.rate),
    td.Binomial: lambda d: Binomial(d.total_count, d.probs),
    td.Geometric: lambda d: Geometric(d.probs),
    td.Uniform: lambda d: Uniform(d.high, d.low),
}


def from_torch(d: td.Distribution) -> Family:
    """The stochgrad family equal to ``d``, sharing its parameter tensors.

    Args:
      d: one of the ``torch.distributions`` in :data:`CONVERTERS` with parameters ``[*batch, D]`` (each
        coordinate of the last dimension an independent component, as stochgrad factorises), or an
        ``Independent`` of one over its last batch dimension.
    Returns:
      The family; its parameters are ``d``'s tensors (Categorical: ``d.logits``, which torch normalises).
    Raises:
      InvalidArgumentError: ``d`` is of another type, or an ``Independent`` over more than one dimension.
    """
    if type(d) is td.Independent:
        if d.reinterpreted_batch_ndims != 1 or d.base_dist.event_shape != torch.Size():
            raise InvalidArgumentError(
                f"dist: stochgrad factorises over the last dimension only; got Independent over "
                f"{d.reinterpreted_batch_ndims} dimension(s) of a {type(d.base_dist).__name__} with event shape "
                f"{tuple(d.base_dist.event_shape)}; reshape the parameters to [*batch, D]")
        d = d.base_dist
    convert = CONVERTERS.get(type(d))
    if convert is None:
        raise InvalidArgumentError(
            f"dist: cannot convert torch.distributions.{type(d).__name__}; stochgrad has "
            f"{', '.join(c.__name__ for c in CONVERTERS)} (factorised over the last dimension)")
    return convert(d)


def as_family(dist: object) -> Family:
    """``dist`` if it is a family, converted by :func:`from_torch` if it is a ``torch.distributions`` object;
    otherwise a named error that says what to pass."""
    if isinstance(dist, Family):
        return dist
    if isinstance(dist, td.Distribution):
        return from_torch(dist)
    raise InvalidArgumentError(
        f"dist: need a stochgrad family (sg.Normal, sg.Bernoulli, ...) or a torch.distributions object that "
        f"sg.from_torch converts; got {type(dist).__name__}")
