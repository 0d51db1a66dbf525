"""``expectation``: a differentiable stand-in for ``E_{x~p_θ} f(x)`` whose backward is an estimator's gradient."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.distributions.from_torch import as_family
from stochgrad.errors import InvalidArgumentError
from stochgrad.estimators.base import Estimator, Evaluator, GradientEstimate, resolve_params


def surrogate(dist: Family, estimate: GradientEstimate) -> Tensor:
    """A scalar whose value is ``Σ_copies estimate.value`` and whose gradient to each estimated parameter is
    ``estimate.grad``: ``value + Σ_p <ĝ_p, θ_p − stop_grad(θ_p)>``.

    Where the estimator has no unbiased value (NaN, e.g. MVD for a Normal's loc), the forward value is the
    mean of f over the evaluated points instead, which is only a proxy; the gradient is unaffected.
    """
    value = estimate.value
    if not bool(torch.isfinite(value).all()):
        value = torch.where(torch.isfinite(value), value, estimate.values.mean(0))
    out = value.sum()
    for name, g in estimate.grad.items():
        theta = dist.param(name)
        if theta.requires_grad:
            out = out + (g.to(theta.dtype) * (theta - theta.detach())).sum()
    return out


def expectation(f: Callable, dist: Family, estimator: Estimator, generator: torch.Generator | None = None,
                params: Sequence[str] | None = None, evaluator: Evaluator | None = None,
                return_estimate: bool = False) -> Tensor | tuple[Tensor, GradientEstimate]:
    """``E_{x~p_θ} f(x)`` as a scalar tensor whose ``backward()`` puts the estimator's gradient into the
    distribution's parameters and, by the chain rule, into whatever produced them (a network, a log-scale).

    Args:
      f: the function under expectation (batched, or whatever ``evaluator`` expects); never differentiated
        unless the estimator is :class:`Pathwise`.
      dist: p_θ; its parameters may be outputs of an ``nn.Module``. A ``torch.distributions`` object is
        converted with :func:`~stochgrad.from_torch` (gradients reach its tensors).
      estimator: any estimator of this library.
      generator: the source of every random number.
      params: which parameters to estimate; by default those that require grad (so MVD spends no
        evaluations on constants).
      evaluator: how to evaluate f; vectorised by default.
      return_estimate: also return the :class:`GradientEstimate` (variances, raw values, n_evals).

    Returns:
      A 0-dim tensor (the sum over copies of the estimated E f), and the estimate if asked.

    Example::

        net = torch.nn.Linear(4, 3)
        dist = Normal(loc=net(inputs), scale=torch.full((3,), 0.1))
        loss = expectation(f, dist, ScoreFunction(16, baseline="loo"), generator=gen)
        loss.backward()            # net.weight.grad now holds the chain-ruled estimate
    """
    dist = as_family(dist)
    if params is None:
        params = [name for name, p in dist.params.items() if p.requires_grad]
        if not params:
            raise InvalidArgumentError(
                f"expectation: none of the parameters of {type(dist).__name__} ({list(dist.param_names)}) "
                "requires grad, so there is nothing to differentiate; pass params=... or build the "
                "distribution from tensors with requires_grad=True")
    params = resolve_params(dist, params)
    est = estimator.estimate(f, dist, generator=generator, params=params, evaluator=evaluator)
    out = surrogate(dist, est)
    return (out, est) if return_estimate else out
