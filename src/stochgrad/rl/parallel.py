"""Where rollouts run: in this process, in local worker processes (the default, every core), or on Ray."""

from __future__ import annotations

import os

from stochgrad.errors import InvalidArgumentError
from stochgrad.evaluators import ProcessPool, Ray, Serial

EVALUATORS = ("process", "ray", "serial")


def make_evaluator(kind: str = "process", workers: int | None = None, ray_address: str | None = None,
                   ) -> Serial | ProcessPool | Ray:
    """An evaluator with ``map(fn, items)`` for episodes.

    Args:
      kind: "process" (local worker processes), "ray" (a Ray cluster) or "serial" (this process).
      workers: processes for "process", CPUs of a local Ray cluster (default: every core).
      ray_address: "auto" (or "ray://…") joins an existing Ray cluster; None starts a local one. Giving an
        address implies ``kind="ray"``.
    """
    if ray_address is not None and kind == "process":
        kind = "ray"
    if kind not in EVALUATORS:
        raise InvalidArgumentError(f"evaluator: got {kind!r}; choose one of {list(EVALUATORS)}")
    if workers is not None and workers < 1:
        raise InvalidArgumentError(f"workers: need at least 1; got {workers}")
    if kind == "serial":
        return Serial()
    if kind == "ray":
        return Ray(address=ray_address, num_cpus=workers)
    return ProcessPool(workers=workers or os.cpu_count() or 1)
