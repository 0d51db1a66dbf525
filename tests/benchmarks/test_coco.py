"""benchmarks/coco.py, the COCO referee: the harness on a tiny budget with every method, the aRT arithmetic on a
hand-made example, Δf against COCO's own target, and COCO's data files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from bench_module import load_benchmark

pytest.importorskip("cocoex")
pytest.importorskip("cma")
pytest.importorskip("scipy")

@pytest.fixture(scope="module")
def coco():
    return load_benchmark("coco")


def _rec(solved: bool, evals: int, to_solve: int | None = None) -> dict:
    return {"solved": solved, "evals": evals, "evals_to_solve": to_solve}


def test_art_arithmetic_on_a_hand_made_example(coco) -> None:
    # two solved runs (at 100 and 300 evaluations, having used 110 and 300), one unsolved run of 1000:
    # aRT = (100 + 300 + 1000) / 2 = 700
    art, solved = coco.aRT([_rec(True, 110, 100), _rec(True, 300, 300), _rec(False, 1000)])
    assert (art, solved) == (700.0, 2)
    assert coco.aRT([_rec(False, 50), _rec(False, 60)]) == (math.inf, 0)
    assert len(coco.TARGETS) == 51 and coco.TARGETS[0] == 100.0 and math.isclose(coco.TARGETS[-1], 1e-8)


def test_delta_f_agrees_with_coco_final_target_on_f1(coco) -> None:
    """Δf = f − f_opt with f_opt from COCO's x_opt: COCO's final target is hit just below Δf = 1e-8, not above."""
    fo, xopt, x = coco.f_opt("bbob", 1, 2, 1), coco.x_opt("bbob", 1, 2, 1)[0], np.zeros(2)
    probe_suite = coco._suite("bbob", 1, 2, 1)
    probe = probe_suite.get_problem_by_function_dimension_instance(1, 2, 1)
    assert probe(xopt) == fo
    for delta, hit in ((2e-8, False), (0.5e-8, True)):
        lo, hi = 0.0, 1.0                                   # f1 is a sphere: bisect along the line to x_opt
        for _ in range(100):
            t = (lo + hi) / 2
            lo, hi = (t, hi) if probe(x + t * (xopt - x)) - fo > delta else (lo, t)
        s = coco._suite("bbob", 1, 2, 1)
        q = s.get_problem_by_function_dimension_instance(1, 2, 1)
        assert q(x) - fo > 1 and not q.final_target_hit
        assert math.isclose(q(x + hi * (xopt - x)) - fo, delta, rel_tol=1e-3)
        assert q.final_target_hit == hit
        q.free()
    probe.free()


def test_harness_runs_every_method_writes_coco_data_and_resumes(coco, tmp_path) -> None:
    results, data = tmp_path / "runs.jsonl", tmp_path / "coco"
    new = coco.run("bbob", [2], [1], list(coco.METHODS), instances=[1], budget_per_dim=200, results=results,
                   data=data, verbose=False)
    assert [r["method"] for r in new] == list(coco.METHODS)
    for r in new:
        assert 0 < r["evals"] <= 400 + r["max_batch"], r           # never more than one batch over the budget
        assert r["solved"] == (r["hits"][-1] is not None), r       # own Δf agrees with COCO's final target
        if r["solved"]:
            assert r["evals_to_solve"] <= r["evals"] and r["best_delta"] < 1e-8
        hits = [h for h in r["hits"] if h is not None]
        assert hits == sorted(hits)
        assert 0 <= r["f_seconds"] <= r["seconds"]
        info = data / "bbob" / r["method"] / "run" / "bbobexp_f1.info"
        assert "funcId = 1, DIM = 2" in info.read_text()
        assert (data / "bbob" / r["method"] / "run" / "data_f1" / "bbobexp_f1_DIM2.tdat").stat().st_size > 0
    assert sum(1 for _ in results.open()) == len(coco.METHODS)
    assert coco.run("bbob", [2], [1], list(coco.METHODS), instances=[1], budget_per_dim=200, results=results,
                    data=data, verbose=False) == []                # resumed: nothing left to run
    text = coco.report(results, write=False)
    assert "### bbob, D = 2" in text and "| f1 |" in text
    assert json.loads(results.read_text().splitlines()[0])["hits"][0] is not None


def test_budget_and_time_cap_stop_a_method(coco) -> None:
    s = coco._suite("bbob", 15, 2, 1)
    q = s.get_problem_by_function_dimension_instance(15, 2, 1)
    p = coco.Problem(q, coco.f_opt("bbob", 15, 2, 1), budget=30, time_limit=None)
    with pytest.raises(coco.Stop):
        while True:
            p.batch(np.zeros((7, 2)))
    assert p.evaluations == 35 and not p.time_capped               # 4 batches below 30, the fifth ends at 35
    p2 = coco.Problem(q, 0.0, budget=10**9, time_limit=1e-9)
    with pytest.raises(coco.Stop):
        p2(np.zeros(2))
    assert p2.time_capped
    q.free()


def test_noisy_runs_are_judged_on_coco_noise_free_delta_f(coco, tmp_path) -> None:
    results, data = tmp_path / "runs.jsonl", tmp_path / "coco"
    (r,) = coco.run("bbob-noisy", [2], [101], ["cma-es"], instances=[1], budget_per_dim=300, results=results,
                    data=data, verbose=False)
    tdat = data / "bbob-noisy" / "cma-es" / "run" / "data_f101" / "bbobexp_f101_DIM2.tdat"
    hits, best = coco.tdat_hits(tdat)
    assert r["hits"] == hits and r["best_delta"] == best and hits[0] == 1
    assert r["solved"] == (hits[-1] is not None) and r["evals"] <= 600 + r["max_batch"]
