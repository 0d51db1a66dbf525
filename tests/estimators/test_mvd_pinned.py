"""MVD's random numbers are pinned: every sampling path (plan, whole buffer, streamed in blocks, separable;
per-component or shared bases; all components or a subset with repeats; several copies) gives exactly the
estimates recorded from the code before its order of draws moved into one place (``estimators/mvd_draws.py``).

Each case is summarised by a SHA-256 of the bytes of its values, gradients, variances and the generator's
final state, so a change in any bit of any of them is caught. Regenerate with
``python tests/estimators/test_mvd_pinned.py`` only when a change of the random numbers is intended (and say so).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import stochgrad as sg
from stochgrad.estimators import measure_valued

T = torch.float64


def _quad(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.3).square().sum(-1) + x[..., 0] * x[..., -1]


_SEP = sg.Separable(lambda v, i: (v - 0.3).square() + 0.1 * i * v, name="pinned")


def _normal(copies: int | None, d: int, dtype: torch.dtype = T) -> sg.Normal:
    shape = (d,) if copies is None else (copies, d)
    loc = torch.linspace(-0.5, 0.7, d, dtype=dtype).expand(shape).clone()
    return sg.Normal(loc, torch.full(shape, 0.4, dtype=dtype))


def _categorical() -> sg.Categorical:
    return sg.Categorical(torch.tensor([[0.2, -0.3, 0.5], [1.0, 0.0, -1.0]], dtype=T).expand(2, 2, 3).clone())


def _cat_f(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 0] - 2 * x[..., 1]).to(T) ** 2


_DIMS = torch.tensor([[0, 2, 0], [2, 2, 1], [1, 1, 1]])          # per copy, with repeats

#: name -> (estimator, dist, f, params, evaluator, STREAM_ELEMENTS or None)
CASES: dict[str, Callable[[], tuple]] = {
    "whole": lambda: (sg.MeasureValued(2), _normal(2, 3), _quad, None, None, None),
    "whole-shared": lambda: (sg.MeasureValued(2, shared_base=True), _normal(2, 3), _quad, None, None, None),
    "whole-float32": lambda: (sg.MeasureValued(1), _normal(None, 5, torch.float32), _quad, None, None, None),
    "streamed": lambda: (sg.MeasureValued(2), _normal(3, 3), _quad, None, None, 8),
    "streamed-shared": lambda: (sg.MeasureValued(2, shared_base=True), _normal(3, 3), _quad, None, None, 8),
    "streamed-dims": lambda: (sg.MeasureValued(2, dims=_DIMS), _normal(3, 3), _quad, ("loc", "scale"), None, 8),
    "streamed-dims-shared": lambda: (sg.MeasureValued(2, dims=_DIMS, shared_base=True), _normal(3, 3), _quad,
                                     None, None, 8),
    "streamed-categorical": lambda: (sg.MeasureValued(2), _categorical(), _cat_f, None, None, None),
    "streamed-categorical-shared": lambda: (sg.MeasureValued(1, shared_base=True, dims=[0, 4, 4]), _categorical(),
                                            _cat_f, None, None, None),
    "separable": lambda: (sg.MeasureValued(2), _normal(2, 3), _SEP, None, None, None),
    "separable-shared": lambda: (sg.MeasureValued(2, shared_base=True), _normal(2, 3), _SEP, None, None, None),
    "separable-dims": lambda: (sg.MeasureValued(1, dims={"loc": _DIMS, "scale": [2]}), _normal(3, 3), _SEP, None,
                               None, None),
    "separable-dims-shared": lambda: (sg.MeasureValued(3, dims=_DIMS, shared_base=True), _normal(3, 3), _SEP,
                                      ("scale",), None, None),
    "plan": lambda: (sg.MeasureValued(2), _normal(2, 3), _quad, None, sg.evaluators.Vectorized(), None),
    "plan-shared": lambda: (sg.MeasureValued(2, shared_base=True, dims=_DIMS), _normal(3, 3), _quad, None,
                            sg.evaluators.Vectorized(), None),
    "plan-uncoupled": lambda: (sg.MeasureValued(2, coupled=False), _normal(2, 3), _quad, None, None, None),
    "plan-uncoupled-shared": lambda: (sg.MeasureValued(2, coupled=False, shared_base=True, dims=_DIMS),
                                      _normal(3, 3), _quad, None, None, None),
    "plan-uncoupled-poisson": lambda: (sg.MeasureValued(2, coupled=False), sg.Poisson(torch.tensor([1.5, 3.0], dtype=T)),
                                       _quad, None, None, None),
}

#: D = 2100 in float32: 4 194 304 // 2100 = 1997 rows per base draw, so each sample's bases come in 2 draws.
LARGE_CASES: dict[str, Callable[[], tuple]] = {
    "streamed-chunked": lambda: (sg.MeasureValued(2), _normal(None, 2100, torch.float32), _quad, ("loc",), None,
                                 None),
    "separable-chunked": lambda: (sg.MeasureValued(2), _normal(None, 2100, torch.float32), _SEP, ("scale",), None,
                                  None),
    "plan-chunked": lambda: (sg.MeasureValued(1), _normal(None, 2100, torch.float32), _quad, ("loc",),
                             sg.evaluators.Vectorized(), None),
}


def digest(case: Callable[[], tuple], seed: int = 11) -> str:
    """SHA-256 over the estimate's values, gradients, variances, value and the generator's final state."""
    est, dist, f, params, evaluator, stream = case()
    old = measure_valued.STREAM_ELEMENTS
    if stream is not None:
        measure_valued.STREAM_ELEMENTS = stream
    try:
        gen = torch.Generator().manual_seed(seed)
        g = est.estimate(f, dist, generator=gen, params=params, evaluator=evaluator)
    finally:
        measure_valued.STREAM_ELEMENTS = old
    h = hashlib.sha256()
    for t in [g.values, g.value, *(g.grad[k] for k in sorted(g.grad)), *(g.variance[k] for k in sorted(g.variance)),
              gen.get_state()]:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


RECORDED: dict[str, str] = {
    "whole": "664c75c9fe34a3a23775e7eb",
    "whole-shared": "2f28e36d0963dba4be34bd4e",
    "whole-float32": "52d17867b11232f201fc2071",
    "streamed": "44f4f0c69a6cbe7561ff3ba4",
    "streamed-shared": "8f184a8affae59f6233ceeee",
    "streamed-dims": "a66fdc9f8cbbd87136e63b79",
    "streamed-dims-shared": "cb2e99bb1586ee5d64b0cb15",
    "streamed-categorical": "1d1c648d2a6f3611b78edbea",
    "streamed-categorical-shared": "b347757a7721e84ea2dcfddb",
    "separable": "89b947f7a80b139857d08db5",
    "separable-shared": "00d1b04726a167da1df1abf4",
    "separable-dims": "0179540b205e5115abb69cdf",
    "separable-dims-shared": "2a88d7add674e8a859020398",
    "plan": "664c75c9fe34a3a23775e7eb",
    "plan-shared": "cb2e99bb1586ee5d64b0cb15",
    "plan-uncoupled": "252e5d85b43447fa230982cd",
    "plan-uncoupled-shared": "e38ff5546d6e47919f40c7d2",
    "plan-uncoupled-poisson": "ccbcbf40a94df8aaed631264",
    "streamed-chunked": "54b1e7f369145939da69e10d",
    "separable-chunked": "55411e835436de7bd625451a",
    "plan-chunked": "d211c1969baf2f6bdc46a183",
}


@pytest.mark.parametrize("name", list(CASES) + list(LARGE_CASES))
def test_estimates_are_the_recorded_ones(name: str) -> None:
    case = CASES.get(name) or LARGE_CASES[name]
    assert digest(case) == RECORDED[name], name


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))
    for name, case in {**CASES, **LARGE_CASES}.items():
        print(f'    "{name}": "{digest(case)}",')
