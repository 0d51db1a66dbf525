"""The one order in which a measure-valued estimate draws its random numbers.

Every sampling path of :class:`~stochgrad.estimators.measure_valued.MeasureValued` (``plan``, and the
whole-buffer, streamed and separable paths of ``estimate``) takes its random numbers from :class:`MVDDraws`,
so that one seed gives the same numbers on each, whichever path an estimate takes. Per parameter, in the
order of the names, the generator is consumed for:

1. the weak derivative's sampler: ``c``, and the + and − coordinates of all M samples of the J listed
   components (``[M, J, *batch]``);
2. the base points (the draws from p_θ whose coordinate is then replaced): with shared bases, one draw of M·R
   points, R the most times a component is listed; otherwise, for each sample m in turn, the J bases in the
   row chunks of :func:`base_chunks`;
3. uncoupled only, the − points' own bases: M·R more shared bases, or all M·J in one draw.

A path reads a block's base draws by iterating :meth:`BlockDraws.bases`; where they land (in place in the
points, in a reused buffer, or fresh) is the path's choice and does not change how the generator is consumed.
(A family may round ``sample`` and ``sample_into`` differently, e.g. Normal's fused ``addcmul``; each path keeps
the one it has always used, which is what makes ``plan`` and the streamed path agree to the bit.)

Example::

    draws = MVDDraws(dist, comps, decompositions, M, coupled=True, shared_base=False,
                     complete=frozenset(comps), generator=gen)
    for block in draws:                       # one per parameter; its sampler has drawn
        for d in block.bases():               # the bases, drawn as the loop asks for them
            ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from stochgrad.distributions.base import Family
from stochgrad.distributions.weak import WeakDerivative


class BaseDraw(NamedTuple):
    """One draw of base points.

    Attributes:
      side: 0 for the + points' bases (which the − points copy when coupled), 1 for the − points' own bases
        (uncoupled only).
      m: the sample the draw is for, or None when it covers every sample.
      j0, j1: the listed components (rows of the block) it covers.
      points: ``[j1 − j0, *batch, D]`` for one sample's chunk; ``[M, J, *batch, D]`` for the uncoupled − side;
        with ``shared``, ``[M·R, *batch, D]``: one base per sample and repeat (see :attr:`BlockDraws.occ`).
      shared: whether ``points`` are shared bases.
    """

    side: int
    m: int | None
    j0: int
    j1: int
    points: Tensor
    shared: bool


class BlockDraws:
    """One parameter's draws. Constructing it runs the weak derivative's sampler; :meth:`bases` draws the rest.

    Attributes:
      name: the parameter.
      row: the block's first row among all ``2·M·ΣJ`` points (its rows are ``[+/−, M, J]``).
      comp: the listed components ``[J, *batch]``.
      c: the weak derivative's constants ``[J, *batch]``.
      plus, minus: the replaced coordinates of the + and − points ``[M, J, *batch]``.
      sampled_side: which side ("plus", "minus") is itself distributed as p_θ, or None.
      occ: with shared bases, which repeat of its component each listed entry is ``[J, *batch]`` (it takes
        base ``m·R + occ`` of sample m); None otherwise.
      R: shared bases per sample (1 without shared bases).
    """

    __slots__ = ("name", "row", "comp", "c", "plus", "minus", "sampled_side", "drawn", "_owner", "_occ", "_R")

    def __init__(self, owner: MVDDraws, name: str, row: int, comp: Tensor, wd: WeakDerivative) -> None:
        self._owner, self.name, self.row, self.comp, self.sampled_side = owner, name, row, comp, wd.sampled_side
        self.c, self.plus, self.minus = wd.sampler(owner.dist, comp, owner.M, owner.generator, owner.coupled)
        self._occ: Tensor | None = None
        self._R = 1 if not owner.shared_base or name in owner.complete else None   # else counted when needed
        self.drawn = False

    @property
    def occ(self) -> Tensor | None:
        if self._occ is None and self._owner.shared_base:
            self._occ, self._R = repeat_index(self.comp, self.name in self._owner.complete)
        return self._occ

    @property
    def R(self) -> int:
        if self._R is None:
            self._occ, self._R = repeat_index(self.comp, False)
        return self._R

    @property
    def rows(self) -> int:
        """``2·M·J``, the block's number of points."""
        return 2 * self._owner.M * self.comp.shape[0]

    def bases(self, into: Sequence[Tensor] | None = None, reuse: bool = False) -> Iterator[BaseDraw]:
        """Draw the block's base points in the fixed order, one :class:`BaseDraw` at a time.

        Args:
          into: the block's + and − points, ``[M, J, *batch, D]`` each: draws that are not shared are made in
            place there (``into[side][m, j0:j1]``, or all of ``into[1]`` for the uncoupled − side).
          reuse: without ``into``, make those draws in one buffer reused by every chunk (the yielded points
            are valid until the next draw); otherwise each is a fresh tensor.

        Where a draw lands does not change the random numbers it consumes; shared bases are always fresh tensors.
        """
        o = self._owner
        M, J = o.M, self.comp.shape[0]
        if o.shared_base:
            for side in ((0,) if o.coupled else (0, 1)):
                yield BaseDraw(side, None, 0, J, o.dist.sample((M * self.R,), o.generator), True)
        else:
            chunks = ((0, J),) if J <= o.rows_per_draw else base_chunks(J, o.dist)
            per_sample = None if into is None else into[0].unbind(0)
            for m in range(M):
                for j0, j1 in chunks:
                    if per_sample is not None:
                        out = per_sample[m] if j1 - j0 == J else per_sample[m].narrow(0, j0, j1 - j0)
                        yield BaseDraw(0, m, j0, j1, o.dist.sample_into(out, o.generator), False)
                    else:
                        yield BaseDraw(0, m, j0, j1, o._draw(j1 - j0, None, reuse), False)
            if not o.coupled:
                out = None if into is None else into[1]
                yield BaseDraw(1, None, 0, J, o._draw((M, J), out, False), False)
        self.drawn = True

    def summary(self) -> tuple[str, int, Tensor, Tensor, str | None]:
        """``(name, row, comp, c, sampled_side)``: what combining the block's values needs."""
        return self.name, self.row, self.comp, self.c, self.sampled_side


class MVDDraws:
    """The random numbers of one MVD estimate, block by block (iterate it; see the module docstring).

    Args:
      dist: the (detached) family.
      comps: per parameter, in order, the listed components ``[J, *batch]``.
      decompositions: per parameter, its weak derivative.
      M: samples per listed component.
      coupled: whether the − points share the + points' bases.
      shared_base: one base per sample (and repeat) shared by all components.
      complete: the parameters whose components are all listed once (no repeats to count).
      generator: the source of every random number.
      point_dtype: the dtype of the points (of the reused buffer): the family's, or long for index-valued ones.
    """

    def __init__(self, dist: Family, comps: Mapping[str, Tensor], decompositions: Mapping[str, WeakDerivative],
                 M: int, coupled: bool, shared_base: bool, complete: frozenset[str],
                 generator: torch.Generator | None, point_dtype: torch.dtype | None = None) -> None:
        self.dist, self.comps, self.decompositions, self.M = dist, comps, decompositions, M
        self.coupled, self.shared_base, self.complete, self.generator = coupled, shared_base, complete, generator
        self.point_dtype = point_dtype or dist.dtype
        #: Rows of one base draw (see :func:`base_chunks`).
        self.rows_per_draw = rows_per_draw(dist)
        self._buffer: Tensor | None = None

    @property
    def n_rows(self) -> int:
        """``2·M·ΣJ``, the points of the whole estimate."""
        return sum(2 * self.M * c.shape[0] for c in self.comps.values())

    def __iter__(self) -> Iterator[BlockDraws]:
        row = 0
        for name, comp in self.comps.items():
            block = BlockDraws(self, name, row, comp, self.decompositions[name])
            yield block
            if not block.drawn:
                raise RuntimeError(f"MVDDraws: the bases of block {name!r} were not all drawn before the next "
                                   "block; iterate block.bases() to the end")
            row += 2 * self.M * comp.shape[0]

    def _draw(self, rows: int | tuple[int, ...], out: Tensor | None, reuse: bool) -> Tensor:
        """Base points of sample shape ``rows``: in ``out``, in the reused buffer, or fresh."""
        if out is not None:
            return self.dist.sample_into(out, self.generator)
        shape = (rows,) if isinstance(rows, int) else rows
        if not reuse:
            return self.dist.sample(shape, self.generator)
        event = (*self.dist.batch_shape, *self.dist.event_shape)
        n = shape[0]
        if self._buffer is None or self._buffer.shape[0] < n:
            self._buffer = torch.empty((n, *event), dtype=self.point_dtype)
        return self.dist.sample_into(self._buffer[:n], self.generator)


def rows_per_draw(dist: Family) -> int:
    """How many base points one draw makes: about 4M numbers, at least one point."""
    return max(1, (1 << 22) // max(1, dist.batch_shape.numel() * dist.event_shape.numel()))


def base_chunks(J: int, dist: Family) -> list[tuple[int, int]]:
    """The row ranges ``[j0, j1)`` in which one sample's J base points are drawn."""
    rows = rows_per_draw(dist)
    return [(j0, min(J, j0 + rows)) for j0 in range(0, J, rows)]


def repeat_index(comp: Tensor, distinct: bool) -> tuple[Tensor, int]:
    """For components ``[J, *batch]``: which repeat of its component each entry is (0 for the first listing,
    1 for the second, ...), and the largest number of repeats R. ``distinct`` says no component repeats."""
    J = comp.shape[0]
    if distinct or J < 2:
        return torch.zeros(comp.shape, dtype=torch.long), 1
    flat = comp.reshape(J, -1)
    srt, order = torch.sort(flat, dim=0, stable=True)
    pos = torch.arange(J).unsqueeze(1).expand_as(srt)
    first = torch.ones_like(srt, dtype=torch.bool)
    first[1:] = srt[1:] != srt[:-1]
    run_start = torch.where(first, pos, torch.zeros_like(pos)).cummax(0).values
    occ = torch.empty_like(flat).scatter_(0, order, pos - run_start)
    return occ.reshape(comp.shape), int(occ.max()) + 1
