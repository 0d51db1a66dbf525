"""The base class of stochgrad's factorised families.

A family ``p_θ(x) = Π_i p_{θ_i}(x_i)`` is factorised over the last dimension of its parameters: component
``i`` of a parameter changes only coordinate ``i`` of a draw. Leading dimensions are independent copies
(``batch_shape``), exactly as in ``torch.distributions``; the last dimension is the event (``event_shape =
(D,)``). Categorical's logits carry one more trailing dimension (the K categories of each coordinate).

Unlike ``torch.distributions`` every draw takes an explicit ``torch.Generator``, and each family knows its
score ``∂ log p / ∂θ`` in closed form, its pathwise Jacobian ``∂x/∂θ`` where one exists, and (through
:mod:`stochgrad.distributions.weak`) its measure-valued decompositions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import constraints

from stochgrad.errors import InvalidArgumentError, UnsupportedError

SampleShape = int | Sequence[int] | torch.Size


def _as_shape(sample_shape: SampleShape) -> tuple[int, ...]:
    if isinstance(sample_shape, int):
        return (sample_shape,)
    return tuple(sample_shape)


def describe_bad(t: Tensor, bad: Tensor) -> str:
    """'value v at index (i, j)' for the first offending entry of ``t``."""
    first = tuple(int(i) for i in bad.nonzero()[0])
    return f"{t.detach()[first].item()!r} at index {first}"


class Family:
    """A factorised distribution over ``[*batch_shape, D]`` points with explicitly seeded sampling.

    Subclasses set the class attributes and implement ``_sample``, ``_score`` and ``_torch``; pathwise
    families also implement ``_rsample_jacobian``.
    """

    #: Parameter names, in the order the constructor and ``params`` use them (torch.distributions names).
    param_names: tuple[str, ...] = ()
    #: Constraint each parameter must satisfy (checked at construction unless ``validate_args=False``).
    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    #: Where draws live.
    support: ClassVar[constraints.Constraint] = constraints.real
    #: Parameters that have a pathwise (reparameterisation) derivative.
    reparam_params: ClassVar[tuple[str, ...]] = ()
    #: Parameters whose score ∂ log p/∂θ gives an unbiased gradient (the support does not move with them).
    score_params: ClassVar[tuple[str, ...]] = ()
    #: Trailing parameter dimensions of one coordinate (0 for scalars, 1 for Categorical's K logits).
    param_coordinate_ndim: ClassVar[int] = 0
    #: Whether ``reflect`` exists: the family is symmetric about its location, so antithetic pairs are valid.
    symmetric: ClassVar[bool] = False

    def __init__(self, params: dict[str, Tensor | float], validate_args: bool = True) -> None:
        dtype = self._common_dtype(params)
        tensors = {k: (v if v.is_floating_point() else v.to(dtype)) if isinstance(v, Tensor)
                   else torch.as_tensor(v, dtype=dtype) for k, v in params.items()}
        self._check_ndim(tensors)
        shapes = [t.shape[: t.dim() - self.param_coordinate_ndim] if self._has_coordinate_dims(k) else t.shape
                  for k, t in tensors.items()]
        shape = shapes[0] if all(s == shapes[0] for s in shapes) else self._broadcast(tensors, shapes)
        self._check_not_empty(tensors, shape)
        if validate_args:
            self._validate(tensors)
        self._params: dict[str, Tensor] = {}
        for k, t in tensors.items():
            full = shape + t.shape[t.dim() - self.param_coordinate_ndim:] if self._has_coordinate_dims(k) else shape
            self._params[k] = t if t.shape == full else t.expand(full)
        self.batch_shape = torch.Size(shape[:-1])
        self.event_shape = torch.Size(shape[-1:])
        self.dtype = dtype

    # -- construction helpers -------------------------------------------------------------------------------
    def _has_coordinate_dims(self, name: str) -> bool:
        return self.param_coordinate_ndim > 0

    def _common_dtype(self, params: dict[str, Tensor | float]) -> torch.dtype:
        """The floating dtype the parameter tensors share (numbers and integer tensors follow it); mixing two
        floating dtypes is an error rather than a silent promotion."""
        floats = {k: v.dtype for k, v in params.items() if isinstance(v, Tensor) and v.is_floating_point()}
        if len(set(floats.values())) > 1:
            got = ", ".join(f"'{k}' {d}" for k, d in floats.items())
            raise InvalidArgumentError(
                f"{type(self).__name__}: parameters must share one floating dtype; got {got}. Convert them to one, "
                "e.g. with .to(torch.float64)")
        return next(iter(floats.values())) if floats else torch.get_default_dtype()

    def _broadcast(self, tensors: dict[str, Tensor], shapes: list[torch.Size]) -> torch.Size:
        try:
            return torch.broadcast_shapes(*shapes)
        except RuntimeError:
            got = ", ".join(f"'{k}' {list(t.shape)}" for k, t in tensors.items())
            raise InvalidArgumentError(
                f"{type(self).__name__}: parameter shapes must be equal or broadcast against each other "
                f"([*batch, D], the last dimension indexing the D coordinates); got {got}") from None

    def _check_not_empty(self, tensors: dict[str, Tensor], shape: torch.Size) -> None:
        empty = [k for k, t in tensors.items() if self._has_coordinate_dims(k) and t.shape[-1] == 0]
        if 0 in shape or empty:
            got = ", ".join(f"'{k}' {list(t.shape)}" for k, t in tensors.items())
            raise InvalidArgumentError(
                f"{type(self).__name__}: parameters must describe at least one copy of at least one coordinate "
                f"(no dimension of size 0); got {got}, i.e. batch_shape {list(shape[:-1])} and D = {shape[-1]}"
                + (f" with {tensors[empty[0]].shape[-1]} categories" if empty else ""))

    def _check_ndim(self, tensors: dict[str, Tensor]) -> None:
        need = 1 + self.param_coordinate_ndim
        if all(t.dim() < need for t in tensors.values()):
            names = ", ".join(tensors)
            raise InvalidArgumentError(
                f"{type(self).__name__}: parameters ({names}) must have at least {need} dimension(s) "
                f"(the last one indexes the D independent coordinates); got shapes "
                f"{[tuple(t.shape) for t in tensors.values()]}. Wrap a scalar as torch.tensor([value]).")

    def _validate(self, tensors: dict[str, Tensor]) -> None:
        cls = type(self).__name__
        for name, t in tensors.items():
            d = t.detach()
            constraint = self.arg_constraints.get(name)
            if _plainly_within(d, constraint):
                continue                     # the common case; below, say what is wrong
            bad = ~torch.isfinite(d)
            if bool(bad.any()):
                raise InvalidArgumentError(
                    f"{cls}: argument '{name}' must be finite; got {describe_bad(d, bad)}")
            if constraint is not None:
                bad = ~constraint.check(d)
                if bool(bad.any()):
                    raise InvalidArgumentError(
                        f"{cls}: argument '{name}' must satisfy {_constraint_text(constraint)}; got "
                        f"{describe_bad(d, bad)}")

    # -- parameters ---------------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Tensor]:
        """The parameters by name, broadcast to their full shapes (they may require grad)."""
        return {k: self._params[k] for k in self.param_names}

    def param(self, name: str) -> Tensor:
        """One parameter; raises a clear error if this family has no such parameter."""
        if name not in self._params:
            raise InvalidArgumentError(
                f"{type(self).__name__} has no parameter '{name}'; its parameters are {list(self.param_names)}")
        return self._params[name]

    def detach(self) -> Family:
        """The same distribution with parameters cut from any autograd graph (itself if none is in one)."""
        if not any(t.requires_grad for t in self._params.values()):
            return self
        return type(self)(**{k: v.detach() for k, v in self.params.items()}, **self._extra_kwargs(),
                          validate_args=False)

    def _extra_kwargs(self) -> dict:
        """Constructor arguments that are not parameters (Binomial's total_count)."""
        return {}

    def component_shape(self, name: str) -> torch.Size:
        """Shape of the per-copy part of parameter ``name``: ``(D,)``, or ``(D, K)`` for Categorical logits."""
        return self.param(name).shape[len(self.batch_shape):]

    def n_components(self, name: str) -> int:
        """Number of scalar components of parameter ``name`` in one copy (D, or D·K)."""
        return math.prod(self.component_shape(name))

    def coordinate_of(self, name: str, component: Tensor) -> Tensor:
        """Index of the coordinate of x that flat component ``component`` of parameter ``name`` acts on."""
        per = math.prod(self.component_shape(name)[1:])
        return component // per if per > 1 else component

    # -- sampling -----------------------------------------------------------------------------------------
    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        """Draws shaped ``[*sample_shape, *batch_shape, D]``, without gradient."""
        with torch.no_grad():
            return self._sample(_as_shape(sample_shape), generator)

    def sample_into(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Fill ``out`` (shaped ``[*S, *batch_shape, D]``) with draws, reusing its memory where the family can.

        Consumes the generator exactly as ``sample(S)`` does, so both give the same numbers.
        """
        with torch.no_grad():
            shape = out.shape[: out.dim() - len(self.batch_shape) - 1]
            return out.copy_(self._sample(tuple(shape), generator))

    def sample_with_noise(self, sample_shape: SampleShape = (),
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """Draws and, where the family is a transformation of standard noise, that noise (else None); the
        noise lets :meth:`score_terms` skip recomputing it."""
        return self.sample(sample_shape, generator), None

    def score_terms(self, x: Tensor, noise: Tensor | None, name: str) -> tuple[Tensor, Tensor | float, float, int]:
        """The score as ``a · (T − c)``: returns (T ``[*S, *batch, *comp]``, a, c, parity), where parity (±1)
        says how T changes under :meth:`reflect`. The default is T = the score itself."""
        return self.score(x, name), 1.0, 0.0, 1

    def rsample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draws shaped ``[*sample_shape, *batch_shape, D]`` that carry gradient to the
        parameters in ``reparam_params``."""
        if not self.reparam_params:
            raise UnsupportedError(
                f"{type(self).__name__} has no pathwise (reparameterised) sampler; use ScoreFunction or "
                "MeasureValued")
        x = self.sample(sample_shape, generator)
        out = x
        for name in self.reparam_params:
            p = self._params[name]
            if p.requires_grad:
                jac = self._rsample_jacobian(x, name)
                out = out + jac * (p - p.detach())
        return out

    def reflect(self, x: Tensor) -> Tensor:
        """The antithetic partner of draw ``x`` (same distribution, negatively correlated)."""
        raise UnsupportedError(
            f"antithetic pairs need a family symmetric about its location (Normal); {type(self).__name__} "
            "is not")

    # -- densities, scores, Jacobians ---------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """log p_θ(x) summed over the D coordinates: ``[*S, *batch_shape, D] -> [*S, *batch_shape]``."""
        return self._torch().log_prob(x).sum(-1)

    def score(self, x: Tensor, name: str) -> Tensor:
        """∂ log p_θ(x) / ∂θ for parameter ``name``, elementwise in closed form.

        Args:
          x: draws ``[*S, *batch_shape, D]``.
          name: a parameter in ``score_params``.
        Returns:
          ``[*S, *batch_shape, *component_shape(name)]``.
        """
        if name not in self.score_params:
            raise UnsupportedError(
                f"the score function is not valid for {type(self).__name__}.{name}: the support of the "
                f"distribution moves with '{name}', so E[f·∂log p] misses a boundary term; use MeasureValued"
                + (" or Pathwise" if name in self.reparam_params else ""))
        with torch.no_grad():
            return self._score(x, name)

    def score_boundary(self, name: str) -> str | None:
        """Why the score function is not valid for score parameter ``name`` at the current values, or None.

        At an end of its range where the support shrinks (Bernoulli probs 0 or 1, Geometric probs 1) a
        coordinate's draws are all one value, so E[f·∂log p] misses the derivative of the probability of the
        values that appear as the parameter moves in: the gradient there is one-sided, and measure-valued
        derivatives give it exactly. Families with such ends override this.
        """
        return None

    def has_valid_score(self, name: str) -> bool:
        """Whether the score function gives an unbiased gradient for ``name`` at the current values."""
        return name in self.score_params and self.score_boundary(name) is None

    def rsample_jacobian(self, x: Tensor, name: str) -> Tensor:
        """∂x/∂θ of the reparameterised draw ``x`` for parameter ``name``, elementwise, shaped like x."""
        if name not in self.reparam_params:
            raise UnsupportedError(
                f"{type(self).__name__}.{name} has no pathwise derivative; pathwise supports "
                f"{list(self.reparam_params) or 'no parameter of this family'}; use ScoreFunction or "
                "MeasureValued")
        with torch.no_grad():
            return self._rsample_jacobian(x, name)

    @property
    def mean(self) -> Tensor:
        """E x, shaped ``[*batch_shape, D]``."""
        return self._torch().mean

    @property
    def variance(self) -> Tensor:
        """Var x per coordinate, shaped ``[*batch_shape, D]``."""
        return self._torch().variance

    def to_torch(self) -> torch.distributions.Distribution:
        """The equivalent ``torch.distributions`` object (``Independent`` over the last dimension)."""
        return torch.distributions.Independent(self._torch(), 1)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"

    # -- to implement -------------------------------------------------------------------------------------
    def _sample(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _score(self, x: Tensor, name: str) -> Tensor:
        raise NotImplementedError

    def _rsample_jacobian(self, x: Tensor, name: str) -> Tensor:
        raise NotImplementedError

    def _torch(self) -> torch.distributions.Distribution:
        raise NotImplementedError

    def _p(self, name: str) -> Tensor:
        """Detached parameter, for sampling and closed forms."""
        t = self._params[name]
        return t.detach() if t.requires_grad else t


def boundary_text(p: Tensor, at: Tensor, name: str, draws: str, missing: str) -> str | None:
    """The explanation :meth:`Family.score_boundary` returns for the first component where ``at`` holds."""
    if not bool(at.any()):
        return None
    first = tuple(int(i) for i in at.nonzero()[0])
    more = int(at.sum()) - 1
    return (f"'{name}' = {p[first].item()!r} at index {first}{f' (and {more} more)' if more else ''} is at the end of its "
            f"range: every draw of that coordinate is {draws}, so E[f·∂log p] misses the derivative of the "
            f"probability of {missing}, and the gradient there is one-sided")


def _plainly_within(d: Tensor, constraint: constraints.Constraint | None) -> bool:
    """Whether every entry of ``d`` is finite and satisfies ``constraint``, from its smallest and largest entry
    (one reduction; NaN propagates into both) where the constraint is a range, else entry by entry."""
    if d.numel() == 0:
        return True
    lo_t, hi_t = torch.aminmax(d)
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    kind = type(constraint)
    if constraint is None or kind is constraints._Real:
        return True
    if kind is constraints._GreaterThan:
        return lo > constraint.lower_bound
    if kind is constraints._GreaterThanEq:
        return lo >= constraint.lower_bound
    if kind is constraints._Interval:
        return constraint.lower_bound <= lo and hi <= constraint.upper_bound
    if kind is constraints._HalfOpenInterval:
        return constraint.lower_bound <= lo and hi < constraint.upper_bound
    return bool(constraint.check(d).all())


def _constraint_text(c: constraints.Constraint) -> str:
    if c is constraints.positive:
        return "> 0"
    if c is constraints.unit_interval:
        return "0 <= value <= 1"
    if isinstance(c, constraints.half_open_interval):
        return f"{c.lower_bound} <= value < {c.upper_bound}"
    if isinstance(c, constraints.interval):
        return f"{c.lower_bound} <= value <= {c.upper_bound}"
    if isinstance(c, constraints.greater_than):
        return f"> {c.lower_bound}"
    return str(c)
