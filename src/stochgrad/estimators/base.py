"""The two-phase estimator interface: ``plan`` the points, evaluate f anywhere, ``combine`` the values.

An :class:`Estimator` never calls f itself inside ``plan``/``combine``; ``estimate`` is the convenience that
does all three in one process. Every estimate carries its own per-component variance estimate, computed from
the per-sample contributions it averaged.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.distributions.from_torch import as_family
from stochgrad.errors import EvaluationError, InvalidArgumentError, NonFiniteGradientError

#: An evaluator maps (f, points) to values; see :mod:`stochgrad.evaluators`.
Evaluator = Callable[[Callable, Tensor], Tensor]


@dataclass
class GradientEstimate:
    """One gradient estimate of ``E_{x~p_θ} f(x)``.

    Attributes:
      grad: per parameter, the estimated gradient, shaped like the parameter (``[*batch, D]`` or
        ``[*batch, D, K]``).
      variance: per parameter, the estimated variance of each component of ``grad`` (same shapes; NaN where
        the estimator had too few per-sample contributions to tell, e.g. MVD with one sample per dimension).
      value: the Monte Carlo estimate of ``E f`` per copy, ``[*batch]``; NaN when no evaluated point is a
        draw from p_θ (e.g. MVD for a Normal's loc alone).
      n_evals: evaluations of f this estimate used, per copy.
      values: the raw values of f that went into it, ``[n_evals, *batch]``.
      estimated: per parameter, a boolean mask of the components that were estimated (MVD with ``dims``
        leaves the rest at zero); None when every component was.
      info: estimator-specific diagnostics (chosen components, combination weights, ...).
    """

    grad: dict[str, Tensor]
    variance: dict[str, Tensor]
    value: Tensor
    n_evals: int
    values: Tensor
    estimated: dict[str, Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Plan(ABC):
    """The points one estimate needs, and how to turn f's values on them into a :class:`GradientEstimate`."""

    #: Points to evaluate, ``[n_evals, *batch_shape, D]``.
    points: Tensor
    #: The family (detached) the plan was made for.
    dist: Family

    @property
    def n_evals(self) -> int:
        """Number of evaluations of f per copy."""
        return self.points.shape[0]

    def combine(self, values: Tensor) -> GradientEstimate:
        """The estimate from ``values = f(points)``, shaped ``[n_evals, *batch_shape]``.

        Values of another floating dtype (or integers) are cast to the distribution's dtype first.

        Raises:
          EvaluationError: the values have the wrong shape or are not finite.
          NonFiniteGradientError: the values were finite but the estimate is not (overflow).
        """
        values = check_values(values, self.points, self.dist.batch_shape, self.requires_grad_values,
                              dtype=self.dist.dtype)
        return self._finish(values)

    def _finish(self, values: Tensor) -> GradientEstimate:
        """``_combine`` on checked values, then the one check every estimate passes: a finite gradient."""
        return check_estimate(self._combine(values), self.dist, self.requires_grad_values)

    #: Whether values must carry gradient back to the points (pathwise).
    requires_grad_values: bool = False

    def used(self, values: Tensor) -> Tensor | None:
        """Mask ``[n_evals, *batch_shape]`` of the evaluations that the estimate from ``values`` uses, or None
        when it uses every one (ARS keeps only its top-b pairs; a caller that scales the values by their spread
        takes the spread of these)."""
        return None

    @abstractmethod
    def _combine(self, values: Tensor) -> GradientEstimate: ...


class Estimator(ABC):
    """Base class: subclasses implement ``plan`` and ``n_evals``.

    Every subclass's ``plan``, ``estimate`` and ``n_evals`` check their common arguments before they run
    (:func:`check_arguments`): a ``torch.distributions`` object is converted with :func:`~stochgrad.from_torch`,
    anything else that is not a family, and a generator that is not a ``torch.Generator``, raise a named error.
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name, wrap in (("plan", _checked_plan), ("estimate", _checked_estimate), ("n_evals", _checked_n_evals)):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_checks_arguments", False):
                setattr(cls, name, wrap(fn))

    @abstractmethod
    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> Plan:
        """Draw the points of one estimate.

        Args:
          dist: the distribution p_θ (its parameters may require grad; the plan uses detached values).
          generator: the source of every random number.
          params: names of the parameters to estimate; all of the family's parameters by default.
        """

    @abstractmethod
    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        """Evaluations of f per copy that one estimate for ``dist`` (and ``params``) takes."""

    def estimate(self, f: Callable, dist: Family, generator: torch.Generator | None = None,
                 params: Sequence[str] | None = None, evaluator: Evaluator | None = None) -> GradientEstimate:
        """Plan, evaluate f on the points (with ``evaluator``, vectorised by default) and combine.

        Args:
          f: a batched function ``[B, *batch_shape, D] -> [B, *batch_shape]`` (or whatever ``evaluator``
            expects, e.g. a function of one point for ``evaluators.Serial``).
          dist: the distribution p_θ.
          generator: the source of every random number.
          params: parameter names to estimate (default: all).
          evaluator: how to evaluate f on the points; ``None`` calls ``f(points)`` once.
        """
        plan = self.plan(dist, generator, params)
        if evaluator is not None:
            values = evaluator(f, plan.points)
        elif plan.requires_grad_values or plan.points.numel() <= EVAL_CHUNK_ELEMENTS:
            values = f(plan.points)
        else:
            values = evaluate_in_chunks(f, plan.points, plan.dist.batch_shape)
        g = plan.combine(values)
        self.update(g)
        return g

    def update(self, estimate: GradientEstimate) -> None:
        """Fold one estimate of this estimator into its running statistics: the one step that changes an
        estimator's state (a no-op for estimators without running statistics).

        ``plan.combine(values)`` is a pure function of the plan and the values; stateful estimators (CCMVD,
        CCSF, Auto) learn only here. :meth:`estimate` calls it once per estimate; ask/tell users call it after
        ``combine`` (``SearchGradient.tell`` does). Calling it twice for one plan raises
        :class:`~stochgrad.errors.InvalidArgumentError`.
        """

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def check_generator(generator: object) -> torch.Generator | None:
    """``generator`` itself if it is a ``torch.Generator`` or None; a named error otherwise."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    hint = (f"; for a seed, pass torch.Generator().manual_seed({generator})"
            if isinstance(generator, int) and not isinstance(generator, bool) else "")
    raise InvalidArgumentError(f"generator: need a torch.Generator or None; got {type(generator).__name__} "
                               f"{generator!r}{hint}")


def check_arguments(dist: object, generator: object) -> tuple[Family, torch.Generator | None]:
    """The family (converted from ``torch.distributions`` if need be) and the checked generator."""
    return as_family(dist), check_generator(generator)


def _checked_plan(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def plan(self, dist, generator=None, params=None, *args, **kwargs):
        dist, generator = check_arguments(dist, generator)
        return fn(self, dist, generator, params, *args, **kwargs)

    plan._checks_arguments = True
    return plan


def _checked_estimate(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def estimate(self, f, dist, generator=None, params=None, *args, **kwargs):
        dist, generator = check_arguments(dist, generator)
        return fn(self, f, dist, generator, params, *args, **kwargs)

    estimate._checks_arguments = True
    return estimate


def _checked_n_evals(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def n_evals(self, dist, params=None, *args, **kwargs):
        return fn(self, as_family(dist), params, *args, **kwargs)

    n_evals._checks_arguments = True
    return n_evals


#: Above this many coordinates in the points, the default evaluation calls f on chunks of rows, so that f's
#: temporaries stay small (f must treat rows independently, as the interface requires).
EVAL_CHUNK_ELEMENTS = 1 << 24


def evaluate_in_chunks(f: Callable, points: Tensor, batch_shape: torch.Size) -> Tensor:
    """``f(points)`` computed on chunks of about :data:`EVAL_CHUNK_ELEMENTS` coordinates and concatenated."""
    rows = max(1, EVAL_CHUNK_ELEMENTS // max(1, points[0].numel()))
    out = []
    for start in range(0, points.shape[0], rows):
        chunk = points[start:start + rows]
        v = check_values(f(chunk), chunk, batch_shape, row_ids=torch.arange(start, start + chunk.shape[0]))
        out.append(v)
    return torch.cat(out, 0)


def resolve_params(dist: Family, params: Sequence[str] | str | None) -> tuple[str, ...]:
    """The parameter names to estimate, checked against the family."""
    if params is None:
        return tuple(dist.param_names)
    if isinstance(params, str):
        params = (params,)
    params = tuple(params)
    if len(set(params)) != len(params):
        twice = sorted({p for p in params if params.count(p) > 1})
        raise InvalidArgumentError(
            f"params: each parameter may be listed once; got {list(params)} ({', '.join(map(repr, twice))} "
            "more than once, which would estimate it twice)")
    if not params:
        raise InvalidArgumentError(
            f"params: need at least one parameter name of {type(dist).__name__}: {list(dist.param_names)}")
    for name in params:
        if name not in dist.param_names:
            raise InvalidArgumentError(
                f"params: {type(dist).__name__} has no parameter '{name}'; its parameters are "
                f"{list(dist.param_names)}")
    return params


def check_values(values: Any, points: Tensor, batch_shape: torch.Size, requires_grad: bool = False,
                 row_ids: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Check f's output: a finite tensor ``[n_points, *batch_shape]``; say which points are bad if not.

    ``row_ids [n_points]``: the indices to report for these points when they are a part of a larger set.
    ``dtype``: the dtype the values are cast to (the distribution's); by default the points' floating dtype."""
    if not isinstance(values, Tensor):
        try:
            values = torch.as_tensor(values)
        except Exception as exc:  # noqa: BLE001 - reported with the type that was returned
            raise EvaluationError(
                f"f must return a tensor of shape {[points.shape[0], *batch_shape]}; got {type(values).__name__}"
            ) from exc
    want = torch.Size([points.shape[0], *batch_shape])
    if values.shape != want:
        raise EvaluationError(
            f"f returned values of shape {list(values.shape)} for points of shape {list(points.shape)}; it must "
            f"return one value per point: shape {list(want)}")
    if dtype is None:
        dtype = points.dtype if points.is_floating_point() else torch.get_default_dtype()
    given = values
    if values.dtype != dtype:
        values = values.to(dtype)
    if all_finite(values):
        bad = None
    else:
        bad = ~torch.isfinite(values.detach())
    if bad is not None:
        rows = bad.reshape(bad.shape[0], -1).any(1).nonzero().flatten()
        ids = rows if row_ids is None else row_ids[rows]
        shown = ids[:5].tolist()
        first, first_id = int(rows[0]), int(ids[0])
        raise EvaluationError(
            f"f returned {int(bad.sum())} non-finite value(s) (NaN or infinity) at point index(es) {shown}"
            f"{' and more' if rows.numel() > 5 else ''}; e.g. f(points[{first_id}]) = "
            f"{values.detach()[first].flatten()[:3].tolist()} with points[{first_id}] = "
            f"{points.detach()[first].flatten()[:6].tolist()}{' ...' if points[first].numel() > 6 else ''}"
            + (f" (f returned finite {given.dtype} values; the cast to the distribution's {dtype} overflowed)"
               if given is not values and all_finite(given) else ""))
    if requires_grad and not values.requires_grad:
        raise EvaluationError(
            "Pathwise needs f to be differentiable torch code: the values f returned carry no gradient back "
            "to the points (was f computed with numpy, .item(), .detach() or under torch.no_grad()?). Use "
            "ScoreFunction or MeasureValued for a black-box f.")
    return values


def check_estimate(estimate: GradientEstimate, dist: Family, differentiates_f: bool = False) -> GradientEstimate:
    """``estimate`` itself if every gradient is finite; else a :class:`NonFiniteGradientError` that names the
    parameter, where and how it is not finite, and what f's values were (they were checked to be finite).
    ``differentiates_f``: the estimate used f's derivative (Pathwise), which may itself be the culprit."""
    for name, g in estimate.grad.items():
        if all_finite(g):
            continue
        d = g.detach()
        bad = ~torch.isfinite(d)
        first = tuple(int(i) for i in bad.nonzero()[0])
        kinds = " and ".join(k for k, m in (("NaN", torch.isnan(d)), ("infinity", torch.isinf(d)))
                             if bool(m.any()))
        vals = estimate.values.detach()
        top = float(vals.abs().max()) if vals.numel() else 0.0
        raise NonFiniteGradientError(
            f"the estimate of {type(dist).__name__}.{name} is not finite: {kinds} in {int(bad.sum())} of "
            f"{d.numel()} component(s), first {d[first].item()!r} at index {first}. f's values were finite "
            f"(largest |f| = {top:.3g}, {vals.dtype}), so "
            + ("f's derivative at some point is not finite (e.g. sqrt at 0), or " if differentiates_f else "")
            + f"the estimator's arithmetic overflowed or divided by zero in {d.dtype}: rescale f, or build the "
            "distribution in float64")
    return estimate


def all_finite(t: Tensor) -> bool:
    """Whether every element of ``t`` is finite. A finite sum proves it (a NaN or an infinity makes the sum
    non-finite) in one reduction; only when the sum is not finite (which overflow alone can cause) are the
    elements checked one by one."""
    t = t.detach()
    if t.numel() == 0:
        return True
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def sample_variance(contrib: Tensor, dim: int = 0) -> Tensor:
    """Variance of the mean of ``contrib`` along ``dim``: s²/n with the unbiased s² (NaN for n < 2).

    Two passes in the input's dtype (mean, then squared deviations): exact where the one-pass moment formula
    would cancel, and several times faster than ``Tensor.var`` along the leading dimension.
    """
    n = contrib.shape[dim]
    if n < 2:
        return torch.full_like(contrib.select(dim, 0), float("nan"))
    dev = contrib - contrib.mean(dim, keepdim=True)
    return dev.mul_(dev).sum(dim) / ((n - 1) * n)
