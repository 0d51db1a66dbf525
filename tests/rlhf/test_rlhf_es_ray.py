"""ES members on Ray workers (a local cluster of 2 CPUs, one for the module): the same run as in this process,
workers that keep their own θ in step with the driver's, a stale or replaced worker resynchronised, named errors."""

from __future__ import annotations

import pytest
import torch

from stochgrad.errors import InvalidArgumentError
from stochgrad.rlhf.trainer import TrainConfig, run_train
from stochgrad.runs.files import load_checkpoint

pytest.importorskip("ray")

VOLATILE = ("seconds", "cpu_seconds", "resyncs")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from stochgrad.evaluators import Ray

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    ev = Ray(num_cpus=2)
    yield ev
    ev.close()


def small(model, **kw) -> TrainConfig:
    base = {"model": str(model), "estimator": "es", "population": 6, "sigma": 0.01, "completions_per_step": 12,
            "steps": 3, "lr": 1e-3, "max_new_tokens": 6, "checkpoint_every": 2, "sample_every": 2, "seed": 3,
            "beta": 0.05, "threads": 1}
    base.update(kw)
    return TrainConfig(**base)


def strip(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def weights(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt")["experiment"]["model"]


@pytest.mark.slow   # a local Ray cluster, two workers that import torch and transformers: ~1 min on 2 busy cores
@pytest.mark.parametrize("estimator, extra", [("es", {}), ("es-lowrank", {}), ("es-lowrank", {"member_batch": 2})])
def test_ray_workers_give_the_same_run_as_this_process(ray_cluster, tmp_path, tiny_model_dir, estimator,
                                                       extra) -> None:
    here = run_train(small(tiny_model_dir, estimator=estimator, **extra), tmp_path / "here", progress=False)
    there = run_train(small(tiny_model_dir, estimator=estimator, evaluator="ray", workers=2, **extra),
                      tmp_path / "ray", progress=False)
    assert strip(there.records) == strip(here.records)
    # θ went out once per worker (at step 1); afterwards only seeds and pair weights
    assert [r["resyncs"] for r in there.records] == [2, 2, 2]
    a, b = weights(tmp_path / "here"), weights(tmp_path / "ray")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resumed on Ray: new workers are stale, receive the checkpoint's state, and continue the same run
    more = run_train(small(tiny_model_dir, estimator=estimator, evaluator="ray", workers=2, steps=4, **extra),
                     tmp_path / "ray", resume=True, progress=False)
    straight = run_train(small(tiny_model_dir, estimator=estimator, steps=4, **extra), tmp_path / "straight",
                         progress=False)
    assert strip(more.records) == strip(straight.records)
    assert more.records[-1]["resyncs"] == 2


@pytest.mark.slow   # as above
def test_a_replaced_or_out_of_step_worker_is_resynchronised(ray_cluster, tmp_path, tiny_model_dir) -> None:
    here = run_train(small(tiny_model_dir), tmp_path / "here", progress=False)
    seen = {}

    def disturb(experiment, record):
        remote = experiment.run.remote
        if record["step"] == 1:
            remote.holders.kill(0)       # the next step builds a new worker 0, which holds the starting model
        if record["step"] == 2:
            seen["restarts"] = remote.holders.restarts
            with torch.no_grad():        # worker 1 stays in step, but this process's θ moves by one ulp
                p = next(p for p in experiment.run.policy.parameters())
                p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))

    there = run_train(small(tiny_model_dir, evaluator="ray", workers=2), tmp_path / "ray", progress=False,
                      callback=disturb)
    assert seen["restarts"] == 1
    assert [r["resyncs"] for r in there.records] == [2, 3, 5]
    assert strip(there.records[:2]) == strip(here.records[:2])


def test_bad_ray_input_gets_a_named_error(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "never"
    with pytest.raises(InvalidArgumentError, match="evaluator: Ray workers evaluate ES population members; "
                                                   "--estimator rloo runs in this process"):
        run_train(small(tiny_model_dir, estimator="rloo", beta=None, population=8, evaluator="ray"), out,
                  progress=False)
    with pytest.raises(InvalidArgumentError, match="device: the Ray workers evaluate members on their CPUs"):
        run_train(small(tiny_model_dir, evaluator="ray", device="cuda"), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="workers: need an integer >= 1; got 0"):
        run_train(small(tiny_model_dir, evaluator="ray", workers=0), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="workers: only with --evaluator ray"):
        run_train(small(tiny_model_dir, workers=2), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="evaluator: got 'process'"):
        run_train(small(tiny_model_dir, evaluator="process"), out, progress=False)
    assert not out.exists()
