"""How f is evaluated on a plan's points: in one vectorised call, point by point, or elsewhere.

An evaluator is any callable ``evaluator(f, points) -> values`` with points ``[B, *batch, D]`` and values
``[B, *batch]``. The estimators never care which one ran, so one seed gives the same numbers on each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from stochgrad.errors import EvaluationError


class Vectorized:
    """Call f once on the whole batch: ``f(points [B, *batch, D]) -> [B, *batch]`` (the default)."""

    def __call__(self, f: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
        return f(points)

    def __repr__(self) -> str:
        return "Vectorized()"


class Serial:
    """Call a function of one point, ``f(x [D]) -> float``, on every point in turn.

    Values that are tensors keep their autograd graph, so a differentiable f of one point also works with
    :class:`~stochgrad.Pathwise`.
    """

    def __call__(self, f: Callable[[Tensor], float | Tensor], points: Tensor) -> Tensor:
        flat = points.reshape(-1, points.shape[-1])
        out = []
        for i in range(flat.shape[0]):
            v = f(flat[i])
            if isinstance(v, Tensor):
                if v.numel() != 1:
                    raise EvaluationError(
                        f"Serial: f must return one number per point; got a tensor of shape {list(v.shape)} "
                        f"for points[{i}]")
                out.append(v.reshape(()).to(points.dtype if points.is_floating_point() else v.dtype))
            else:
                try:
                    out.append(torch.tensor(float(v), dtype=points.dtype if points.is_floating_point()
                                            else torch.get_default_dtype()))
                except (TypeError, ValueError) as exc:
                    raise EvaluationError(
                        f"Serial: f must return one number per point; got {type(v).__name__} for points[{i}]"
                    ) from exc
        return torch.stack(out).reshape(points.shape[:-1])

    def __repr__(self) -> str:
        return "Serial()"
