"""The Ray evaluator on a real local cluster (2 CPUs): the same numbers as the process evaluator, the worktree's
code in the workers, dead workers re-run, environment errors passed through. One cluster for the module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import stochgrad
from stochgrad.evaluators import Ray
from stochgrad.rl.envs import RLEnvironmentError
from stochgrad.rl.rollout import TRAIN, episode_seed
from stochgrad.rl.trainer import TrainConfig, Trainer

pytest.importorskip("ray")

FAULTY = "rl_test_envs:FaultyPendulum-v0"


@pytest.fixture(scope="module")
def ray_ev():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    # the workers also need this directory, for rl_test_envs
    ev = Ray(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent)}})
    yield ev
    ev.close()
    assert not ray.is_initialized()


def _rows(trainer: Trainer, n: int) -> list[dict]:
    return [{k: v for k, v in trainer.step().items() if k != "seconds"} for _ in range(n)]


def test_ray_gives_the_same_learning_curve_as_the_process_pool(ray_ev, pool) -> None:
    cfg = TrainConfig(env="Hopper-v5", estimator="ccmvd", episodes=48, max_episode_steps=100, eval_every=2,
                      eval_episodes=2, evaluator="ray")
    a = Trainer(cfg, 3, ray_ev)
    rows_ray = _rows(a, 3)
    b = Trainer(cfg, 3, pool)
    rows_pool = _rows(b, 3)
    assert rows_ray == rows_pool
    assert np.array_equal(a.weights, b.weights)
    assert rows_ray[-1]["eval_return"] is not None


def test_ray_workers_import_this_copy_of_stochgrad(ray_ev) -> None:
    ident = ray_ev.worker_identity()
    assert Path(ident["stochgrad"]) == Path(stochgrad.__file__).resolve().parent
    assert ray_ev.workers == 2


@pytest.mark.slow   # Ray starts a new worker process (torch, gymnasium, mujoco imports): ~40 s on a busy machine
def test_a_dead_ray_worker_has_its_episodes_rerun(ray_ev, tmp_path) -> None:
    marker = tmp_path / "died"
    kw = {"die_seed": episode_seed(4, 0, 6, TRAIN), "marker": str(marker), "nan_step": 3}
    cfg = TrainConfig(env=FAULTY, estimator="sf-antithetic", episodes=16, episodes_per_iter=8, eval_every=100,
                      evaluator="ray", env_kwargs=kw)
    before = ray_ev.restarts
    rows = _rows(Trainer(cfg, 4, ray_ev), 2)
    assert marker.exists() and ray_ev.restarts == before + 1
    assert rows == _rows(Trainer(cfg, 4, ray_ev), 2)          # marker present: no death, same numbers


def test_environment_errors_come_back_from_ray_workers(ray_ev) -> None:
    bad = episode_seed(0, 0, 1, TRAIN)
    cfg = TrainConfig(env=FAULTY, estimator="sf-antithetic", episodes=8, episodes_per_iter=4, evaluator="ray",
                      env_kwargs={"nan_seed": bad, "what": "reward"})
    with pytest.raises(RLEnvironmentError, match=rf"{FAULTY} returned a non-finite reward .*step 5"):
        Trainer(cfg, 0, ray_ev).step()


def test_ray_evaluates_points_like_the_other_evaluators(ray_ev) -> None:
    import torch

    from stochgrad.evaluators import Serial

    points = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(ray_ev(torch.linalg.norm, points), Serial()(torch.linalg.norm, points))


def test_no_address_starts_a_new_local_cluster_even_if_ray_start_left_one(monkeypatch) -> None:
    # ray.init(address=None) would join the cluster whose address `ray start` wrote to /tmp/ray (or fail if it
    # is gone); Ray(address=None) must always start its own.
    import ray

    seen = {}

    class Stop(Exception):
        pass

    def fake_init(address=None, **kwargs):
        seen["address"], seen["num_cpus"] = address, kwargs.get("num_cpus")
        raise Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    with pytest.raises(Stop):
        Ray(num_cpus=2)
    assert seen == {"address": "local", "num_cpus": 2}
    with pytest.raises(Stop):
        Ray(address="auto")
    assert seen == {"address": "auto", "num_cpus": None}
