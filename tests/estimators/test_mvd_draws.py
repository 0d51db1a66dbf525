"""MVDDraws: one order of random draws for every MVD path, whatever the destination of the base points."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from stochgrad.distributions.weak import weak_derivative
from stochgrad.estimators.mvd_draws import MVDDraws, base_chunks, rows_per_draw

T = torch.float64


def _draws(dist, coupled=True, shared_base=False, seed=0, dims=None):
    names = dist.param_names
    est = sg.MeasureValued(2, coupled=coupled, shared_base=shared_base, dims=dims)
    comps = {n: est.components(dist, n) for n in names}
    complete = frozenset(n for n in names if dims is None)
    return MVDDraws(dist, comps, {n: weak_derivative(dist, n) for n in names}, 2, coupled, shared_base, complete,
                    torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("coupled", [True, False])
@pytest.mark.parametrize("shared_base", [False, True])
def test_the_destination_of_the_bases_does_not_change_the_draws(coupled, shared_base) -> None:
    dist = sg.Normal(torch.linspace(-1, 1, 6, dtype=T).expand(3, 6).clone(), torch.full((3, 6), 0.5, dtype=T))
    runs = {}
    for mode in ("into", "reuse", "fresh"):
        draws = _draws(dist, coupled, shared_base, dims=torch.tensor([0, 5, 5, 2]))
        got = []
        for b in draws:
            block = torch.empty(2, 2, b.comp.shape[0], 3, 6, dtype=T)
            kw = {"into": block.unbind(0)} if mode == "into" else {"reuse": mode == "reuse"}
            for d in b.bases(**kw):
                got.append((b.name, d.side, d.m, d.j0, d.j1, d.shared, d.points.clone(), b.plus.clone()))
        runs[mode] = (got, draws.generator.get_state())
    ref, state = runs["into"]
    for mode in ("reuse", "fresh"):
        got, st = runs[mode]
        assert torch.equal(st, state), mode                 # the generator is consumed identically
        assert [g[:6] for g in got] == [r[:6] for r in ref]
        for g, r in zip(got, ref):
            assert torch.allclose(g[6], r[6], rtol=1e-14, atol=1e-14) and torch.equal(g[7], r[7])


def test_the_order_is_sampler_then_bases_block_by_block() -> None:
    dist = sg.Normal(torch.zeros(4, dtype=T), torch.ones(4, dtype=T))
    order = []
    for b in _draws(dist, coupled=False):
        order.append((b.name, "sampler"))
        order += [(b.name, d.side, d.m) for d in b.bases()]
    assert order == [("loc", "sampler"), ("loc", 0, 0), ("loc", 0, 1), ("loc", 1, None),
                     ("scale", "sampler"), ("scale", 0, 0), ("scale", 0, 1), ("scale", 1, None)]


def test_a_block_whose_bases_were_not_drawn_stops_the_next_one() -> None:
    dist = sg.Normal(torch.zeros(4, dtype=T), torch.ones(4, dtype=T))
    with pytest.raises(RuntimeError, match="bases of block 'loc' were not all drawn"):
        for _ in _draws(dist):
            pass


def test_base_chunks_cover_the_rows_in_draws_of_about_4m_numbers() -> None:
    dist = sg.Normal(torch.zeros(2100), 1.0)
    assert rows_per_draw(dist) == (1 << 22) // 2100
    chunks = base_chunks(2100, dist)
    assert chunks == [(0, 1997), (1997, 2100)]
