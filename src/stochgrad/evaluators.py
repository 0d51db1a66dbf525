"""How f is evaluated on a plan's points: in one vectorised call, point by point, or elsewhere.

An evaluator is any callable ``evaluator(f, points) -> values`` with points ``[B, *batch, D]`` and values
``[B, *batch]``. The estimators never care which one ran, so one seed gives the same numbers on each.
"""

from __future__ import annotations

import pickle
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


def _init_worker() -> None:
    torch.set_num_threads(1)


def _evaluate_chunk(f: Callable, chunk: Tensor, per_point: bool) -> Tensor:
    if per_point:
        return Serial()(f, chunk)
    return torch.as_tensor(f(chunk))


class ProcessPool:
    """Evaluate f in worker processes on this machine.

    Args:
      workers: processes to use (default: every core).
      per_point: f is a function of one point ``[D] -> float`` (default) or of a chunk ``[n, D] -> [n]``.
      chunks_per_worker: the points are split into this many chunks per worker, for load balance.
      start_method: multiprocessing start method; "spawn" (default) is safe with torch and threads, and needs
        f to be importable (a function defined at the top level of a module, not a lambda).

    The values come back in the order of the points, so one seed gives the same estimate as ``Vectorized``.
    Use as a context manager, or call :meth:`close`, to stop the workers.
    """

    def __init__(self, workers: int | None = None, per_point: bool = True, chunks_per_worker: int = 4,
                 start_method: str = "spawn") -> None:
        import os

        self.workers = workers or os.cpu_count() or 1
        self.per_point = per_point
        self.chunks_per_worker = chunks_per_worker
        self.start_method = start_method
        self._executor = None

    def _pool(self):
        if self._executor is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(self.start_method),
                                                 initializer=_init_worker)
        return self._executor

    def __call__(self, f: Callable, points: Tensor) -> Tensor:
        lead = points.shape[:-1]
        flat = points.detach().reshape(-1, points.shape[-1])
        n_chunks = max(1, min(flat.shape[0], self.workers * self.chunks_per_worker))
        chunks = list(flat.tensor_split(n_chunks))
        try:
            parts = list(self._pool().map(_evaluate_chunk, [f] * len(chunks), chunks,
                                          [self.per_point] * len(chunks)))
        except (AttributeError, TypeError, pickle.PicklingError) as exc:
            if "pickle" in str(exc).lower() or "can't get" in str(exc).lower():
                raise EvaluationError(
                    f"ProcessPool: f must be picklable to reach the worker processes (a function defined at "
                    f"the top level of an importable module, not a lambda or a local function): {exc}") from exc
            raise
        values = torch.cat([p.reshape(-1) for p in parts])
        return values.reshape(lead)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProcessPool(workers={self.workers}, per_point={self.per_point})"
