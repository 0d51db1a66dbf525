"""Categorical(logits z) over K categories, D independent coordinates: logits ``[*batch, D, K]``."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.distributions import draws
from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import register_weak_derivative


class Categorical(Family):
    """D independent categorical variables with values in {0, …, K−1}.

    Args:
      logits: unnormalised log-probabilities ``[*batch, D, K]``; draws are ``[*S, *batch, D]`` (int64).

    The parameter's components are the D·K logits of one copy, flattened row-major (component ``i·K + k`` is
    logit k of coordinate i).
    """

    param_names = ("logits",)
    param_names_all = param_names
    arg_constraints = {"logits": constraints.real}
    support = constraints.nonnegative_integer
    score_params = ("logits",)
    param_coordinate_ndim = 1

    def __init__(self, logits: Tensor, validate_args: bool = True) -> None:
        super().__init__({"logits": logits}, validate_args)

    @property
    def logits(self) -> Tensor:
        return self._params["logits"]

    @property
    def probs(self) -> Tensor:
        """Normalised probabilities ``[*batch, D, K]``."""
        return torch.softmax(self.logits, -1)

    @property
    def n_categories(self) -> int:
        return self.logits.shape[-1]

    def _sample(self, shape, generator):
        p = torch.softmax(self._p("logits"), -1)
        return draws.categorical(p.expand(*shape, *p.shape), generator)

    def _score(self, x, name):
        p = torch.softmax(self._p("logits"), -1)
        onehot = torch.nn.functional.one_hot(x.long(), self.n_categories).to(p.dtype)
        return onehot - p

    def _torch(self):
        return torch.distributions.Categorical(logits=self.logits, validate_args=False)

    @property
    def mean(self) -> Tensor:
        k = torch.arange(self.n_categories, dtype=self.dtype)
        return (self.probs * k).sum(-1)

    @property
    def variance(self) -> Tensor:
        k = torch.arange(self.n_categories, dtype=self.dtype)
        return (self.probs * k * k).sum(-1) - self.mean ** 2


@register_weak_derivative(Categorical, "logits",
                          "per logit z_k: c = p_k(1 − p_k); p⁺ = δ_k; p⁻ = p conditioned on ≠ k",
                          couples_coordinate=False)
def _categorical_logits(dist: Categorical, component: Tensor, n: int, generator, coupled: bool):
    K = dist.n_categories
    p = torch.softmax(dist._p("logits"), -1)                       # [*batch, D, K]
    i, k = component // K, component % K                           # [J, *batch]
    rows = p.unsqueeze(0).expand(component.shape[0], *p.shape)
    rows = rows.gather(component.dim(), i[..., None, None].expand(*i.shape, 1, K)).squeeze(component.dim())
    pk = rows.gather(-1, k[..., None]).squeeze(-1)                  # [J, *batch]
    others = rows.scatter(-1, k[..., None], 0.0)                    # p with category k removed
    minus = draws.categorical(others.expand(n, *others.shape), generator)
    plus = k.expand(n, *k.shape)
    return pk * (1 - pk), plus, minus
