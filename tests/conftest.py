import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
