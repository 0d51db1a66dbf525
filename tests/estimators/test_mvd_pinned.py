"""MVD's random numbers are pinned: every sampling path (plan, whole buffer, streamed in blocks, separable;
per-component or shared bases; all components or a subset with repeats; several copies) gives exactly the
estimates recorded from the code before its order of draws moved into one place (``estimators/mvd_draws.py``).

Each case is summarised by a SHA-256 of its values, gradients and variances to 7 significant digits and of the
generator's final state, so a change in the draws is caught on any CPU. Regenerate with
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
    for t in [g.values, g.value, *(g.grad[k] for k in sorted(g.grad)), *(g.variance[k] for k in sorted(g.variance))]:
        # to 7 significant digits: the last bits of sums and transcendental functions differ between CPUs
        # (AVX2 and AVX-512 paths), while a change in the draws changes every digit
        # (entries below 1e-9 of the tensor's largest are rounding residue of cancellations: hashed as 0)
        v = t.detach().double().flatten()
        if v.numel():
            v = torch.where(v.abs() < 1e-9 * float(v.abs().max()), 0.0, v)
        h.update(",".join(f"{x:.6e}" for x in v.tolist()).encode())
    h.update(gen.get_state().numpy().tobytes())
    return h.hexdigest()[:24]


RECORDED: dict[str, str] = {
    "whole": "5fea092f93bcf9115903a38c",
    "whole-shared": "8a579df9aa6fd8888e6a63f6",
    "whole-float32": "89952e689816beccbec6e5fe",
    "streamed": "83b37797b08a5a8461279d98",
    "streamed-shared": "086527112c8a4fba1c2c86c8",
    "streamed-dims": "9ca6cdeae7d35eb86cade361",
    "streamed-dims-shared": "ab6a50bf9c5eccee4e243ca7",
    "streamed-categorical": "caa8b0e735aad3522b3b89f3",
    "streamed-categorical-shared": "0816913a4b753eafc8c97806",
    "separable": "5220390dcd1b774c686c1741",
    "separable-shared": "8a3116bef74b800bceaf676e",
    "separable-dims": "b7291d80dad95478d85cde73",
    "separable-dims-shared": "ad582ea5eddd1803569e63b7",
    "plan": "5fea092f93bcf9115903a38c",
    "plan-shared": "ab6a50bf9c5eccee4e243ca7",
    "plan-uncoupled": "1227a3f20edf204663e6ebc4",
    "plan-uncoupled-shared": "602ca4e9284aa85cd1d9f296",
    "plan-uncoupled-poisson": "10dd43ca648eb720167a4aa3",
    "streamed-chunked": "0fc34e8b8b796884fc7d6651",
    "separable-chunked": "e38c05f2786e0173b3e93d2f",
    "plan-chunked": "9e58a0b39e0ee8df59c5c5d1",
}


@pytest.mark.parametrize("name", list(CASES) + list(LARGE_CASES))
def test_estimates_are_the_recorded_ones(name: str) -> None:
    case = CASES.get(name) or LARGE_CASES[name]
    assert digest(case) == RECORDED[name], name


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))
    for name, case in {**CASES, **LARGE_CASES}.items():
        print(f'    "{name}": "{digest(case)}",')
