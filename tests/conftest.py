import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# One intra-op thread: the tests' tensors are small, and on a shared 2-core machine OpenMP threads that spin
# while other processes hold the cores made single tests 10x slower from one run to the next.
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
