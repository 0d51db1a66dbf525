"""Structured evaluation: a separable f takes a path that never builds the MVD points, with the same result."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from stochgrad.estimators import base as estimator_base
from stochgrad.lab.functions import FUNCTIONS

T = torch.float64


@pytest.mark.parametrize("name", ["sphere", "rastrigin", "styblinski-tang"])
@pytest.mark.parametrize("M", [1, 3])
def test_separable_path_gives_the_general_result(name: str, M: int) -> None:
    fn = FUNCTIONS[name]
    dist = sg.Normal(fn.default_loc(12).expand(3, 12), torch.full((3, 12), 0.2, dtype=T))
    fast = sg.MeasureValued(M).estimate(fn, dist, generator=torch.Generator().manual_seed(4))
    slow = sg.MeasureValued(M).estimate(lambda x: fn(x), dist, generator=torch.Generator().manual_seed(4))
    for p in ("loc", "scale"):
        assert torch.allclose(fast.grad[p], slow.grad[p], rtol=1e-10, atol=1e-10)
    assert torch.allclose(fast.values, slow.values, rtol=1e-12)
    assert fast.n_evals == slow.n_evals


def test_separable_wrapper_and_generator_state() -> None:
    w = torch.linspace(1, 2, 6, dtype=T)
    f = sg.Separable(lambda v, i: w[i] * v * v, name="weighted")
    x = torch.randn(4, 6, dtype=T, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(f(x), (w * x * x).sum(-1))
    dist = sg.Normal(torch.zeros(6, dtype=T), 0.5)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    sg.MeasureValued(2).estimate(f, dist, generator=g1)
    sg.MeasureValued(2).estimate(lambda x: f(x), dist, generator=g2)
    assert torch.equal(g1.get_state(), g2.get_state())      # later estimates see the same random numbers


def test_large_point_sets_are_evaluated_in_chunks(monkeypatch) -> None:
    monkeypatch.setattr(estimator_base, "EVAL_CHUNK_ELEMENTS", 100)
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return (x * x).sum(-1)

    dist = sg.Normal(torch.zeros(20, dtype=T), 1.0)
    g = sg.MeasureValued(1).estimate(f, dist, generator=torch.Generator().manual_seed(0), params=("loc",))
    assert max(calls) == 5 and sum(calls) == 40 and g.n_evals == 40
    with pytest.raises(sg.EvaluationError, match=r"shape \[5, 1\]"):
        sg.MeasureValued(1).estimate(lambda x: (x * x).sum(-1, keepdim=True), dist,
                                     generator=torch.Generator().manual_seed(0), params=("loc",))
