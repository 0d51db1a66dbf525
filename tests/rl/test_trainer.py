"""The trainer: it learns, it is the same on every evaluator, it resumes exactly, it fails cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stochgrad as sg
from stochgrad.evaluators import Serial
from stochgrad.rl.envs import RLEnvironmentError
from stochgrad.rl.rollout import TRAIN, episode_seed
from stochgrad.rl.run import run_eval, run_train
from stochgrad.rl.trainer import TrainConfig, Trainer
from stochgrad.runs.files import load_checkpoint, read_jsonl

FAULTY = "rl_test_envs:FaultyPendulum-v0"


def _fast(**kw) -> TrainConfig:
    """InvertedPendulum-v5 (4 parameters), episodes cut at 100 steps: a run of 20 iterations takes ~1 s."""
    base = {"env": "InvertedPendulum-v5", "estimator": "sf-antithetic", "episodes": 160, "episodes_per_iter": 8,
            "sigma": 0.3, "lr": 0.3, "max_episode_steps": 100, "eval_every": 5, "eval_episodes": 10,
            "checkpoint_every": 3, "evaluator": "serial"}
    base.update(kw)
    return TrainConfig(**base)


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("estimator", ["sf-antithetic", "ars", "ccmvd", "auto", "mvd"])
def test_a_short_run_improves_the_return(estimator: str) -> None:
    # ARS keeps the top b = 2 of N = 4 directions; its step on the std of the 4 returns used wants a smaller σ, α
    cfg = _fast(estimator=estimator, **({"top": 2, "sigma": 0.1, "lr": 0.1} if estimator == "ars" else {}))
    for seed in (0, 1):
        tr = Trainer(cfg, seed, Serial())
        before, _ = tr.evaluate(20)
        rows = []
        while not tr.done():
            rows.append(tr.step())
        after = rows[-1]["eval_return"]
        # W = 0 balances for ~25 steps; every estimator more than doubles that within 160 episodes
        assert before < 35 and after > 2 * before + 10, (estimator, seed, before, after)
        assert rows[-1]["episodes"] == 160 and rows[-1]["steps"] == sum(
            8 * r["mean_length"] for r in rows)


def test_the_process_pool_gives_the_same_learning_curve_as_one_process(pool) -> None:
    cfg = _fast(estimator="ccmvd", episodes=64)
    a = Trainer(cfg, 5, pool)
    rows_a = [a.step() for _ in range(8)]
    b = Trainer(cfg, 5, Serial())
    rows_b = [b.step() for _ in range(8)]
    assert _without_time(rows_a) == _without_time(rows_b)
    assert np.array_equal(a.weights, b.weights)


def test_a_killed_run_resumes_to_the_same_parameters(tmp_path) -> None:
    cfg = {"estimator": "auto", "episodes": 120, "checkpoint_every": 4, "seeds": 2}
    full, _ = run_train(_fast(**cfg), tmp_path / "full", progress=False)

    def kill(trainer, row):
        if trainer.seed == 1 and trainer.iteration == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train(_fast(**cfg), tmp_path / "cut", progress=False, callback=kill)
    # seed 0 took 15 iterations, seed 1 was killed after its 7th: the checkpoint is at step 20 (every 4 steps)
    assert [s["iteration"] for s in load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["experiment"]["seeds"]] \
        == [15, 5]
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 22        # 2 rows past the checkpoint
    resumed, _ = run_train(_fast(**cfg), tmp_path / "cut", resume=True, progress=False)
    for f, r in zip(full, resumed):
        assert np.array_equal(f.weights, r.weights)
        assert _without_time(f.rows) == _without_time(r.rows)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["experiment"]["seeds"][1]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["experiment"]["seeds"][1]
    assert torch.equal(a["search"]["loc"], b["search"]["loc"])
    assert torch.equal(a["normalizer"]["m2"], b["normalizer"]["m2"])


def test_a_resumed_run_can_be_given_more_episodes(tmp_path) -> None:
    run_train(_fast(episodes=48), tmp_path / "r", progress=False)
    res, _ = run_train(_fast(episodes=96), tmp_path / "r", resume=True, progress=False)
    straight, _ = run_train(_fast(episodes=96), tmp_path / "s", progress=False)
    assert res[0].rows[-1]["episodes"] == 96
    assert np.array_equal(res[0].weights, straight[0].weights)


def test_nan_from_the_environment_stops_the_run_and_keeps_the_last_checkpoint(tmp_path) -> None:
    bad = episode_seed(0, 5, 3, TRAIN)          # episode 3 of iteration 6 (0-based 5)
    cfg = TrainConfig(env=FAULTY, estimator="sf-antithetic", episodes=200, episodes_per_iter=4, eval_every=100,
                      checkpoint_every=2, evaluator="serial", env_kwargs={"nan_seed": bad, "nan_step": 7})
    with pytest.raises(RLEnvironmentError, match=rf"environment {FAULTY} returned a non-finite observation .*at "
                                                 rf"step 7 of the episode with seed {bad}"):
        run_train(cfg, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["experiment"]["seeds"][0]
    assert ckpt["iteration"] == 4 and ckpt["episodes"] == 16
    # the checkpoint is exactly that of an undisturbed run at iteration 4
    ok = TrainConfig(**{**cfg.to_dict(), "episodes": 16, "env_kwargs": {}})
    ref, _ = run_train(ok, tmp_path / "ref", progress=False)
    assert np.array_equal(ckpt["weights"].numpy(), ref[0].weights)
    # the run directory is still usable: the policy replays
    assert run_eval(tmp_path / "run", episodes=2, evaluator=Serial())[0][0] < 0


def test_a_worker_that_dies_has_its_episodes_rerun(pool, tmp_path) -> None:
    die = episode_seed(2, 1, 5, TRAIN)
    marker = tmp_path / "died"
    kw = {"die_seed": die, "marker": str(marker), "nan_step": 3}
    cfg = TrainConfig(env=FAULTY, estimator="sf-antithetic", episodes=24, episodes_per_iter=8, eval_every=100,
                      evaluator="serial", env_kwargs=kw)
    before = pool.restarts
    tr = Trainer(cfg, 2, pool)
    rows = [tr.step() for _ in range(3)]
    assert marker.exists() and pool.restarts == before + 1
    ref = Trainer(cfg, 2, Serial())              # the marker exists now: nobody dies
    assert _without_time([ref.step() for _ in range(3)]) == _without_time(rows)


def test_bad_settings_are_named() -> None:
    with pytest.raises(sg.InvalidArgumentError, match="estimator: unknown name 'reinforce'"):
        _fast(estimator="reinforce").validate()
    with pytest.raises(sg.InvalidArgumentError, match="pathwise needs a differentiable f"):
        _fast(estimator="pathwise").validate()
    with pytest.raises(sg.InvalidArgumentError, match="env: cannot make Gymnasium environment 'Hoper-v5'"):
        Trainer(_fast(env="Hoper-v5"), 0, Serial())
    with pytest.raises(sg.InvalidArgumentError, match="continuous .Box. action space"):
        Trainer(_fast(env="CartPole-v1"), 0, Serial())
    with pytest.raises(sg.InvalidArgumentError, match="episodes_per_iter: mvd needs at least 8 episodes"):
        Trainer(_fast(estimator="mvd", episodes_per_iter=6), 0, Serial())
    with pytest.raises(sg.InvalidArgumentError, match="episodes/steps"):
        _fast(episodes=None).validate()
    with pytest.raises(sg.InvalidArgumentError, match="sigma: need a positive finite number; got -0.1"):
        _fast(sigma=-0.1).validate()
    with pytest.raises(sg.InvalidArgumentError, match="optimizer: got 'lbfgs'"):
        _fast(optimizer="lbfgs").validate()
    with pytest.raises(sg.InvalidArgumentError, match="top: ARS uses b <= N = 4 directions; got 9"):
        Trainer(_fast(estimator="ars", top=9), 0, Serial())
    with pytest.raises(sg.InvalidArgumentError, match=r"episodes_per_iter: ars uses 6 of 7 episodes per estimate"):
        Trainer(_fast(estimator="ars", episodes_per_iter=7), 0, Serial())
    with pytest.raises(sg.InvalidArgumentError, match=r"episodes_per_iter: sf-antithetic uses 6 of 7 episodes"):
        Trainer(_fast(episodes_per_iter=7), 0, Serial())
    with pytest.raises(sg.InvalidArgumentError, match=r"directions: estimator ccmvd offers no choice of directions; "
                                                      r"estimators that do: ars"):
        _fast(estimator="ccmvd", directions="orthogonal").validate()
    with pytest.raises(sg.InvalidArgumentError, match=r"directions: got 'ortho'; choose one of \['orthogonal', "):
        _fast(estimator="ars", directions="ortho").validate()
    with pytest.raises(sg.InvalidArgumentError, match=r"min_episodes_per_iter: need a positive integer; got 0"):
        _fast(min_episodes_per_iter=0).validate()


def test_the_default_is_ars_with_orthogonal_directions_and_at_least_six_episodes() -> None:
    from stochgrad.rl.envs import env_spec

    cfg = TrainConfig(env="Swimmer-v5")
    s = cfg.resolved(env_spec("Swimmer-v5"))
    assert (cfg.estimator, s["orthogonal"], s["episodes_per_iter"], s["top"]) == ("ars", True, 6, 3)
    s = TrainConfig(env="Hopper-v5").resolved(env_spec("Hopper-v5"))
    assert (s["episodes_per_iter"], s["top"]) == (16, 4)                       # ARS's N = 8, b = 4 kept
    assert TrainConfig(env="Swimmer-v5", min_episodes_per_iter=1).resolved(env_spec("Swimmer-v5"))[
        "episodes_per_iter"] == 2


def test_orthogonal_directions_reach_the_estimator_and_learn() -> None:
    assert not Trainer(_fast(estimator="ars", top=4, directions="independent"), 0, Serial()).search.estimator.orthogonal
    cfg = _fast(estimator="ars", top=4, sigma=0.1, lr=0.1)                    # orthogonal by default
    tr = Trainer(cfg, 0, Serial())
    assert tr.search.estimator.orthogonal and tr.settings["orthogonal"]
    eps = tr.search.estimator.plan(tr.search.distribution(), torch.Generator().manual_seed(0)).eps   # [4, 4]
    gram = eps @ eps.T
    assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros(4, 4, dtype=torch.float64),
                          atol=1e-12)
    first = tr.evaluate()[0]
    while not tr.done():
        tr.step()
    assert tr.evaluate()[0] > first + 20


def test_run_directory_errors(tmp_path) -> None:
    with pytest.raises(sg.InvalidArgumentError, match="resume: .* holds no run to resume"):
        run_train(_fast(), tmp_path / "none", resume=True, progress=False)
    run_train(_fast(episodes=16), tmp_path / "r", progress=False)
    with pytest.raises(sg.InvalidArgumentError, match="already holds a run; pass --resume"):
        run_train(_fast(episodes=16), tmp_path / "r", progress=False)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["config"]["estimator"] == "sf-antithetic" and cfg["resolved"]["n_params"] == 4
    with pytest.raises(sg.InvalidArgumentError, match="not a run directory"):
        run_eval(tmp_path / "none")


def test_an_episode_budget_below_one_iteration_is_refused() -> None:
    with pytest.raises(sg.BudgetError, match=r"episodes: one iteration of sf-antithetic on InvertedPendulum-v5 "
                                             r"takes 8 episodes \(episodes_per_iter\); got a budget of 5"):
        Trainer(_fast(episodes=5), 0, Serial())


def test_a_run_never_uses_more_episodes_than_its_budget(tmp_path) -> None:
    res, _ = run_train(_fast(episodes=20), tmp_path / "r", progress=False)
    assert res[0].rows[-1]["episodes"] == 16                     # two iterations of 8; a third would make 24


#: Recorded from the trainer before ARS moved into the estimator registry (seed 0, 4 iterations): the first
#: rows and the final policy mean W (as float.hex), for ARS V2-t with b = 2 of N = 4 (std of the 4 returns
#: used, a plain step) and with all N directions, centred ranks and Adam.
_ARS_RECORDED = [
    ({"estimator": "ars", "directions": "independent", "top": 2, "sigma": 0.1, "lr": 0.1},
     [(199, 23.875, 34.0, 9.826446640818085), (366, 19.875, 38.0, 14.423381333969079),
      (619, 30.625, 40.0, 15.643862762430754), (1015, 48.625, 100.0, 17.2809829153939)],
     ["0x1.7ff18f49266c1p-9", "0x1.3e95e8d086b0cp-2", "0x1.eaa0c5afd79c8p-4", "0x1.5a9ed468e3639p-1"]),
    ({"estimator": "ars", "directions": "independent", "reward_scaling": "centered-ranks", "optimizer": "adam"},
     [(230, 27.75, 49.0, 1.5340351592958907), (459, 27.625, 51.0, 1.2656760806421037),
      (738, 33.875, 61.0, 1.1795482606192933), (1097, 43.875, 57.0, 1.8819199272783131)],
     ["-0x1.1611c44e843cfp-1", "0x1.745461ce848a1p-1", "0x1.cfe211f6b7928p-2", "0x1.29cd416c2492ap+0"]),
]


@pytest.mark.parametrize("kw, rows, weights", _ARS_RECORDED, ids=["top2-std-sgd", "all-ranks-adam"])
def test_ars_gives_the_recorded_numbers(kw, rows, weights) -> None:
    tr = Trainer(_fast(**kw), 0, Serial())
    got = [tr.step() for _ in range(4)]
    assert [(r["steps"], r["mean_return"], r["max_return"], r["grad_norm"]) for r in got] == rows
    assert [float(x).hex() for x in tr.search.loc.detach()] == weights


def test_common_seeds_start_every_training_episode_of_an_iteration_alike_but_not_the_evaluations() -> None:
    from stochgrad.rl.rollout import EVAL, iteration_seeds

    tr = Trainer(_fast(common_seeds=True), 3, Serial())
    points = tr.search.ask().numpy()
    train = tr._episodes(points, TRAIN, 5, 0.0, True)
    assert {e.seed for e in train} == {episode_seed(3, 5, 0, TRAIN)}
    assert len({e.seed for e in tr._episodes(points, EVAL, 5, 0.0, False)}) == len(points)
    assert iteration_seeds(3, 5, 4) == [episode_seed(3, 5, i) for i in range(4)]
    assert iteration_seeds(3, 6, 4, common=True) != iteration_seeds(3, 5, 4, common=True)   # a new start each time
    # the same policy at the same seed gives the same return: a pair's difference is the policy's effect alone
    from stochgrad.rl.rollout import run_episode

    same = [run_episode(e).ret for e in tr._episodes(np.repeat(points[:1], 2, 0), TRAIN, 5, 0.0, False)]
    assert same[0] == same[1]
    with pytest.raises(sg.InvalidArgumentError, match="common_seeds: need True or False; got 'yes'"):
        _fast(common_seeds="yes").validate()


def test_a_run_with_common_seeds_learns() -> None:
    cfg = _fast(common_seeds=True)
    for seed in (0, 1):
        tr = Trainer(cfg, seed, Serial())
        first = tr.evaluate()[0]
        while not tr.done():
            tr.step()
        assert tr.evaluate()[0] > first + 20


def test_a_run_saved_before_directions_existed_resumes_as_ars_v2_t() -> None:
    from stochgrad.runs import config_from_dict

    old = config_from_dict(TrainConfig, {"env": "Swimmer-v5", "estimator": "ars"})
    assert (old.directions, old.min_episodes_per_iter, old.orthogonal()) == ("independent", 1, False)
    new = config_from_dict(TrainConfig, {**old.to_dict(), "directions": None, "min_episodes_per_iter": 6})
    assert new.orthogonal() and new.min_episodes_per_iter == 6
