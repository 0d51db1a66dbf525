"""Run a block with a given number of torch intra-op threads, restoring the previous number afterwards.

Tiny models are dominated by per-operation overhead: on a busy 2-core machine two OpenMP threads made the
demo model's training step about 30 times slower than one thread, so the demo, benchmarks and tests use one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (``None``: leave torch's setting alone)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
