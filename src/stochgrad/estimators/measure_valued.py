"""The measure-valued derivative (MVD, weak derivative) estimator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.distributions.categorical import Categorical
from stochgrad.distributions.weak import weak_derivative
from stochgrad.errors import BudgetError, EvaluationError, InvalidArgumentError
from stochgrad.estimators import base as estimator_base
from stochgrad.estimators.base import (
    Estimator,
    GradientEstimate,
    Plan,
    all_finite,
    check_values,
    resolve_params,
    sample_variance,
)
from stochgrad.estimators.mvd_draws import MVDDraws
from stochgrad.structured import is_separable

#: Families whose draws are integer indices rather than numbers of the parameters' dtype.
_DISCRETE_INDEX = (Categorical,)

#: The in-process path calls f on blocks of about this many coordinates (1 MiB of float32): large enough that
#: the per-call cost vanishes, small enough that the block and f's temporaries stay in cache.
STREAM_ELEMENTS = 1 << 18

#: Components to estimate: None (all), flat indices ``[J]`` shared by every copy, or ``[*batch, J]`` per copy.
DimsSpec = None | Sequence[int] | Tensor


class MeasureValued(Estimator):
    """``∂_j E f ≈ c_j/M Σ_m (f(x⁺_{jm}) − f(x⁻_{jm}))`` for each parameter component j.

    x⁺ (x⁻) is a draw from p_θ whose coordinate i(j) was replaced by a draw from the positive (negative) part
    of the weak derivative (see :mod:`stochgrad.distributions.weak`). Costs 2·M evaluations per estimated
    component; deterministic in the structure of f and usually far lower in variance than the score function.

    Args:
      samples_per_dim: M, the pairs of evaluations per component.
      coupled: share random numbers between x⁺ and x⁻ (the other coordinates, and the base draw of coordinate
        i where the decomposition allows). Coupling keeps the estimate unbiased and lowers its variance.
      dims: estimate only these components (flat indices into one copy's parameter, i.e. into ``D`` or
        ``D·K`` for Categorical logits), either shared ``[J]`` or per copy ``[*batch, J]``, or a dict from
        parameter name to such a spec. The other components get gradient 0 and ``estimated`` is False there.
        A component listed m times gets m·M pairs (so ``dims`` can allocate samples unevenly).
      shared_base: draw one base point per sample (per repeat of a component listed several times) and share
        it among all components' pairs, as optax and the code of Mohamed et al. (2020) do, instead of a base
        per component. Each component's estimate has exactly the same distribution (unbiased, same variance,
        so the same expected squared error); only the covariance between components changes. It draws M·D
        instead of M·J·D base numbers, which is most of the cost of one estimate at large D for a cheap f.

    Example::

        est = MeasureValued(samples_per_dim=1, coupled=True)
        g = est.estimate(f, Normal(torch.zeros(10), torch.full((10,), 0.1)), generator=gen)
        g.n_evals   # 2 · 1 · (10 + 10) = 40

    References: Pflug (1989); Heidergott and Vázquez-Abad (2000); Mohamed et al. (2020) §6.
    """

    def __init__(self, samples_per_dim: int = 1, coupled: bool = True,
                 dims: DimsSpec | Mapping[str, DimsSpec] = None, shared_base: bool = False) -> None:
        if not isinstance(samples_per_dim, int) or isinstance(samples_per_dim, bool) or samples_per_dim < 1:
            raise BudgetError(f"samples_per_dim: MeasureValued needs at least 1 sample per component (2 "
                              f"evaluations); got {samples_per_dim!r}")
        self.samples_per_dim = samples_per_dim
        self.coupled = bool(coupled)
        self.dims = dims
        self.shared_base = bool(shared_base)

    def _dims_for(self, name: str) -> DimsSpec:
        return self.dims.get(name) if isinstance(self.dims, Mapping) else self.dims

    def components(self, dist: Family, name: str) -> Tensor:
        """The components of ``name`` to estimate, as ``[J, *batch]`` flat indices."""
        n = dist.n_components(name)
        if isinstance(self.dims, Mapping):
            unknown = [k for k in self.dims if k not in dist.param_names]
            if unknown:
                raise InvalidArgumentError(
                    f"dims: {type(dist).__name__} has no parameter {unknown[0]!r}; the keys of dims must be among "
                    f"its parameters {list(dist.param_names)}; got keys {list(self.dims)}")
        spec = self._dims_for(name)
        batch = dist.batch_shape
        if spec is None:
            comp = torch.arange(n)
            return comp.reshape(n, *([1] * len(batch))).expand(n, *batch)
        comp = torch.as_tensor(spec)
        if comp.is_floating_point() or comp.dtype == torch.bool:
            raise InvalidArgumentError(f"dims: need integer component indices; got dtype {comp.dtype}")
        comp = comp.long()
        if comp.dim() == 0:
            comp = comp.reshape(1)
        if comp.numel() == 0:
            raise InvalidArgumentError("dims: need at least one component index; got none")
        if bool(((comp < 0) | (comp >= n)).any()):
            raise InvalidArgumentError(
                f"dims: component indices must be in [0, {n}) for {type(dist).__name__}.{name}; got "
                f"{comp[(comp < 0) | (comp >= n)][:5].tolist()}")
        if comp.dim() == 1:
            return comp.reshape(-1, *([1] * len(batch))).expand(comp.shape[0], *batch)
        if tuple(comp.shape[:-1]) != tuple(batch):
            raise InvalidArgumentError(
                f"dims: per-copy indices must be shaped [*batch_shape, J] = [{', '.join(map(str, batch))}, J]; "
                f"got {list(comp.shape)}")
        return comp.movedim(-1, 0)

    def _complete(self, names: Sequence[str]) -> frozenset[str]:
        return frozenset(name for name in names if self._dims_for(name) is None)

    def n_evals(self, dist: Family, params: Sequence[str] | None = None) -> int:
        names = resolve_params(dist, params)
        return sum(2 * self.samples_per_dim * self.components(dist, name).shape[0] for name in names)

    def plan(self, dist: Family, generator: torch.Generator | None = None,
             params: Sequence[str] | None = None) -> MeasureValuedPlan:
        names = resolve_params(dist, params)
        decompositions = {name: weak_derivative(dist, name) for name in names}
        dist = dist.detach()
        M = self.samples_per_dim
        comps = {name: self.components(dist, name) for name in names}
        event = (*dist.batch_shape, *dist.event_shape)
        dtype = torch.long if isinstance(dist, _DISCRETE_INDEX) else dist.dtype
        draws = MVDDraws(dist, comps, decompositions, M, self.coupled, self.shared_base, self._complete(names),
                         generator, dtype)
        points = torch.empty((draws.n_rows, *event), dtype=dtype)
        blocks = []
        for b in draws:
            comp = b.comp
            coord = dist.coordinate_of(b.name, comp).expand(M, *comp.shape).unsqueeze(-1)   # [M, J, *batch, 1]
            block = points[b.row:b.row + b.rows].view(2, M, comp.shape[0], *event)
            sides = block.unbind(0)
            for d in b.bases(into=sides):
                if d.shared:
                    sides[d.side].copy_(_pick(d.points.to(dtype), b.occ, M))
            if self.coupled:
                sides[1].copy_(sides[0])
            sides[0].scatter_(-1, coord, b.plus.unsqueeze(-1).to(dtype))
            sides[1].scatter_(-1, coord, b.minus.unsqueeze(-1).to(dtype))
            blocks.append(b.summary())
        return MeasureValuedPlan(dist, points, M, blocks, self._complete(names))


    def estimate(self, f, dist, generator=None, params=None, evaluator=None):
        """As :meth:`Estimator.estimate`. In-process (``evaluator=None``) with coupled pairs the points are never
        materialised all at once: a :class:`~stochgrad.structured.Separable` f is reduced per coordinate, any
        other f is called on successive blocks of about :data:`STREAM_ELEMENTS` coordinates, built in one
        reused buffer as they are needed. Both give the numbers of ``plan`` + ``f(points)`` + ``combine`` (up to
        rounding for the separable path); pass ``evaluator=evaluators.Vectorized()`` to call f once on all."""
        if evaluator is None and self.coupled:
            if is_separable(f) and not isinstance(dist, _DISCRETE_INDEX):
                return self._estimate_separable(f, dist, generator, params)
            names = resolve_params(dist, params)
            if self._fits_whole(dist, names):
                return self._estimate_whole(f, dist, generator, names)
            return self._estimate_streaming(f, dist, generator, params)
        return super().estimate(f, dist, generator, params, evaluator)

    def _fits_whole(self, dist: Family, names: Sequence[str]) -> bool:
        """Whether :meth:`_estimate_whole` applies: every component of every parameter acts on its own
        coordinate (no Categorical logits), and all points together are one small block."""
        if dist.param_coordinate_ndim or isinstance(dist, _DISCRETE_INDEX):
            return False
        if any(self._dims_for(name) is not None for name in names):
            return False
        per_row = max(1, dist.batch_shape.numel() * dist.event_shape.numel())
        block = min(STREAM_ELEMENTS, estimator_base.EVAL_CHUNK_ELEMENTS)
        return len(names) * 2 * self.samples_per_dim * dist.event_shape.numel() * per_row <= block

    def _estimate_whole(self, f, dist: Family, generator, names: tuple[str, ...]) -> GradientEstimate:
        """Every component of every parameter, with all points in one buffer and one call of f: the lean path
        for small estimates, where the cost is the number of tensor operations, not their size. Draws exactly
        from ``MVDDraws`` as ``plan`` does; component j replaces coordinate j, i.e. the diagonal of each ``[J, D]``
        block."""
        decompositions = {name: weak_derivative(dist, name) for name in names}
        dist = dist.detach()
        M = self.samples_per_dim
        batch = dist.batch_shape
        D = dist.event_shape.numel()
        event = (*batch, D)
        comp = self.components(dist, names[0])                                        # [D, *batch], all
        K = len(names)
        points = torch.empty((K * 2 * M * D, *event), dtype=dist.dtype)
        complete = frozenset(names)
        draws = MVDDraws(dist, dict.fromkeys(names, comp), decompositions, M, True, self.shared_base, complete,
                         generator)
        blocks = []
        for block, b in zip(points.view(K, 2, M, D, *event).unbind(0), draws):
            base, paired = block.unbind(0)                                            # [M, D, *batch, D] each
            for d in b.bases(into=(base, paired)):
                if d.shared:                                 # all components, each listed once: R = 1
                    base.copy_(d.points.unsqueeze(1).expand(M, D, *event))
            paired.copy_(base)
            block.diagonal(dim1=2, dim2=-1).copy_(torch.stack([b.plus, b.minus]).movedim(2, -1))
            blocks.append(b.summary())
        values = f(points)
        if not _plainly_valid(values, points.shape[0], batch, dist.dtype):
            values = check_values(values, points, batch, dtype=dist.dtype)
        return MeasureValuedPlan(dist, points, M, blocks, complete)._finish(values)

    def _estimate_streaming(self, f, dist: Family, generator, params) -> GradientEstimate:
        names = resolve_params(dist, params)
        decompositions = {name: weak_derivative(dist, name) for name in names}
        dist = dist.detach()
        M = self.samples_per_dim
        batch = dist.batch_shape
        event = (*batch, *dist.event_shape)
        dtype = torch.long if isinstance(dist, _DISCRETE_INDEX) else dist.dtype
        per_row = max(1, batch.numel() * dist.event_shape.numel())
        rows = max(1, min(STREAM_ELEMENTS, estimator_base.EVAL_CHUNK_ELEMENTS) // (2 * per_row))
        comps = {name: self.components(dist, name) for name in names}
        draws = MVDDraws(dist, comps, decompositions, M, self.coupled, self.shared_base, self._complete(names),
                         generator, dtype)
        total = draws.n_rows
        buf = values = None
        blocks = []
        for b in draws:
            comp, row = b.comp, b.row
            J = comp.shape[0]
            coord = dist.coordinate_of(b.name, comp).unsqueeze(-1).expand(2, J, *batch, 1)   # [2, J, *batch, 1]
            replaced = torch.stack([b.plus, b.minus], 1).unsqueeze(-1).to(dtype)            # [M, 2, J, *batch, 1]
            for d in b.bases(reuse=True):
                if d.shared:
                    shared = d.points.to(dtype)                                       # [M·R, *batch, D]
                    chunks = [(m, 0, J) for m in range(M)]
                else:
                    chunks = [(d.m, d.j0, d.j1)]
                for m, j0, j1 in chunks:
                    for s0 in range(j0, j1, rows):
                        s1 = min(j1, s0 + rows)
                        n = s1 - s0
                        if buf is None or buf.numel() < 2 * n * per_row:
                            buf = torch.empty(2 * n * per_row, dtype=dtype)
                        pts = buf[:2 * n * per_row].view(2, n, *event)
                        src = _pick(shared, b.occ[s0:s1], M, m=m) if d.shared else d.points[s0 - j0:s1 - j0]
                        pts.copy_(src.unsqueeze(0).expand_as(pts))
                        pts.scatter_(-1, coord[:, s0:s1], replaced[m, :, s0:s1])
                        flat = pts.view(2 * n, *event)
                        v = f(flat)
                        if not _plainly_valid(v, 2 * n, batch, dist.dtype):
                            ids = row + m * J + torch.cat([torch.arange(s0, s1), M * J + torch.arange(s0, s1)])
                            v = check_values(v, flat, batch, row_ids=ids, dtype=dist.dtype)
                        if values is None:
                            values = torch.empty((total, *batch), dtype=dist.dtype)
                        values[row:row + 2 * M * J].view(2, M, J, *batch)[:, m, s0:s1] = \
                            v.detach().reshape(2, n, *batch)
            blocks.append(b.summary())
        points = torch.zeros((), dtype=dtype).expand(total, *event)                 # never materialised
        return MeasureValuedPlan(dist, points, M, blocks, self._complete(names))._finish(values)

    def _estimate_separable(self, f, dist: Family, generator, params) -> GradientEstimate:
        names = resolve_params(dist, params)
        decompositions = {name: weak_derivative(dist, name) for name in names}
        dist = dist.detach()
        M = self.samples_per_dim
        event = (*dist.batch_shape, *dist.event_shape)
        D = event[-1]
        index = torch.arange(D)
        term = f.coordinate_term
        comps = {name: self.components(dist, name) for name in names}
        draws = MVDDraws(dist, comps, decompositions, M, self.coupled, self.shared_base, self._complete(names),
                         generator)
        parts, blocks = [], []
        for b in draws:
            comp, plus, minus = b.comp, b.plus, b.minus
            J = comp.shape[0]
            coord = dist.coordinate_of(b.name, comp)                                 # [J, *batch]
            vals = torch.empty((2, M, J, *dist.batch_shape), dtype=dist.dtype)
            for d in b.bases():
                base = d.points
                with torch.no_grad():
                    if d.shared:                                                      # [M·R, *batch, D]
                        base_i = _pick(base, b.occ, M, coord)   # [M, J, *batch], read before term sees base
                        f_base = _pick(term(base, index).sum(-1), b.occ, M)             # [M, J, *batch]
                        drop = f_base - term(base_i, coord)
                        vals[0] = drop + term(plus.to(base.dtype), coord)
                        vals[1] = drop + term(minus.to(base.dtype), coord)
                        continue
                    m, j0, j1 = d.m, d.j0, d.j1                                       # base: [rows, *batch, D]
                    idx = coord[j0:j1]
                    base_i = base.gather(-1, idx.unsqueeze(-1)).squeeze(-1)         # before term sees base
                    f_base = term(base, index).sum(-1)
                    drop = f_base - term(base_i, idx)
                    vals[0, m, j0:j1] = drop + term(plus[m, j0:j1].to(base.dtype), idx)
                    vals[1, m, j0:j1] = drop + term(minus[m, j0:j1].to(base.dtype), idx)
            parts.append(vals.reshape(2 * M * J, *dist.batch_shape))
            blocks.append(b.summary())
        values = torch.cat(parts, 0)
        if not all_finite(values):
            bad = (~torch.isfinite(values)).reshape(values.shape[0], -1).any(1).nonzero().flatten()[:5].tolist()
            raise EvaluationError(f"f returned non-finite values (NaN or infinity) at point index(es) {bad}")
        points = torch.zeros((), dtype=dist.dtype).expand(draws.n_rows, *event)    # never materialised
        return MeasureValuedPlan(dist, points, M, blocks, self._complete(names))._finish(values)


def _plainly_valid(v: object, n: int, batch: torch.Size, dtype: torch.dtype) -> bool:
    """The common case, checked cheaply: a finite tensor ``[n, *batch]`` of the distribution's dtype (else
    ``check_values`` casts it or says what is wrong)."""
    return isinstance(v, Tensor) and v.dtype == dtype and v.shape == (n, *batch) and all_finite(v)


def _pick(t: Tensor, occ: Tensor, M: int, coord: Tensor | None = None, m: int | None = None) -> Tensor:
    """From per-base values ``t [M·R, *batch, ...]`` the entry of each (sample m, listed component j):
    ``[M, J, *batch, ...]`` (with ``coord [J, *batch]``: only that coordinate of the last dimension; with
    ``m``: only that sample, ``[J, *batch, ...]``)."""
    J, batch = occ.shape[0], occ.shape[1:]
    B = batch.numel()
    R = t.shape[0] // M
    tail = t.shape[1 + len(batch):]
    if R == 1 and coord is None:            # no repeats: every component takes its sample's base, as a view
        per = t.reshape(M, 1, *batch, *tail).expand(M, J, *batch, *tail)
        return per[m] if m is not None else per
    tt = t.reshape(M, R, B, *tail)
    if m is not None:
        tt = tt[m:m + 1]
    copies = torch.arange(B)
    of = occ.reshape(J, B)
    if coord is None:
        out = tt[:, of, copies]                                                       # [M, J, B, *tail]
    else:
        out = tt[:, of, copies, coord.reshape(J, B)]                                  # [M, J, B]
    out = out.reshape(out.shape[0], J, *batch, *out.shape[3:])
    return out[0] if m is not None else out


class MeasureValuedPlan(Plan):
    """Points ``[(+/−) × M × J]`` per parameter and the recipe of :class:`MeasureValued`."""

    def __init__(self, dist: Family, points: Tensor, samples_per_dim: int,
                 blocks: list[tuple[str, int, Tensor, Tensor, str | None]],
                 complete: frozenset[str] = frozenset()) -> None:
        self.dist, self.points, self.samples_per_dim, self.blocks = dist, points, samples_per_dim, blocks
        #: Parameters whose components are all listed once, in order (``dims=None``): no scatter needed.
        self.complete = complete

    def contributions(self, values: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Per parameter: (components ``[J, *batch]``, per-sample terms ``c·(f⁺ − f⁻)`` ``[M, J, *batch]``)."""
        M = self.samples_per_dim
        out = {}
        for name, row, comp, c, _ in self.blocks:
            J = comp.shape[0]
            f_plus, f_minus = values.narrow(0, row, 2 * M * J).reshape(2, M, J, *values.shape[1:]).unbind(0)
            out[name] = (comp, c * (f_plus - f_minus))
        return out

    def _combine(self, values: Tensor) -> GradientEstimate:
        values = values.detach()
        dist, M = self.dist, self.samples_per_dim
        grad, var, mask, sampled = {}, {}, {}, []
        for name, (comp, h) in self.contributions(values).items():
            shape = dist.param(name).shape
            if name in self.complete:
                grad[name] = (h.select(0, 0) if M == 1 else h.mean(0)).movedim(0, -1).reshape(shape)
                var[name] = (torch.full(shape, float("nan"), dtype=h.dtype) if M == 1
                             else sample_variance(h).movedim(0, -1).reshape(shape))
                continue
            # Every (sample, listed component) is one contribution; a component listed m times has m·M.
            idx = comp.expand(M, *comp.shape).reshape(-1, *comp.shape[1:]).movedim(0, -1)   # [*batch, M·J]
            hh = h.reshape(-1, *h.shape[2:]).movedim(0, -1)                                   # [*batch, M·J]
            flat = (*dist.batch_shape, dist.n_components(name))
            count = values.new_zeros(flat).scatter_add_(-1, idx, torch.ones_like(hh))
            mean = values.new_zeros(flat).scatter_add_(-1, idx, hh) / count.clamp_min(1)
            dev2 = (hh - mean.gather(-1, idx)) ** 2
            ss = values.new_zeros(flat).scatter_add_(-1, idx, dev2)
            v = torch.where(count >= 2, ss / (count - 1).clamp_min(1) / count.clamp_min(1),
                            torch.where(count > 0, torch.nan, 0.0))
            grad[name] = mean.reshape(shape)
            var[name] = v.reshape(shape)
            mask[name] = (count > 0).reshape(shape)
        for name, row, comp, _, side in self.blocks:
            if side is not None:
                J = comp.shape[0]
                fv = values.narrow(0, row, 2 * M * J).reshape(2, M * J, *values.shape[1:])
                sampled.append(fv.select(0, 0 if side == "plus" else 1))
        value = (torch.cat(sampled, 0).mean(0) if len(sampled) > 1 else sampled[0].mean(0) if sampled
                 else values.new_full(values.shape[1:], float("nan")))
        estimated = None
        if not all(bool(m.all()) for m in mask.values()):
            estimated = {name: mask[name] if name in mask else torch.ones(dist.param(name).shape, dtype=torch.bool)
                         for name in grad}
        return GradientEstimate(grad, var, value, self.n_evals, values, estimated,
                                info={"components": {name: comp for name, _, comp, _, _ in self.blocks}})
