"""Shared fixtures of the RLHF tests: one torch thread (restored afterwards) and a tiny pretrained model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("transformers")
pytest.importorskip("vaderSentiment")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest, and reproducibly, on one thread (see stochgrad.runs.threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 briefly pretrained on the demo corpus (a few seconds), saved with its tokenizer."""
    from stochgrad.runs.threads import torch_threads
    from stochgrad.rlhf.tiny import build_pretrained

    with torch_threads(1):
        path, _ = build_pretrained(tmp_path_factory.mktemp("tiny") / "model", n_sentences=4000, steps=200,
                                   vocab_size=400, seed=0)
    return path
