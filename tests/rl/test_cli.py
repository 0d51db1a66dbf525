"""``stochgrad rl train | eval | variance`` end to end (one process, InvertedPendulum cut at 100 steps)."""

from __future__ import annotations

import json

import pytest

from stochgrad.cli import main
from stochgrad.runs.files import load_checkpoint, read_jsonl

FAST = ["--env", "InvertedPendulum-v5", "--sigma", "0.3", "--lr", "0.3", "--max-episode-steps", "100",
        "--episodes-per-iter", "8", "--evaluator", "serial", "--no-progress"]


def test_train_eval_and_resume(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["rl", "train", *FAST, "--estimator", "ccmvd", "--seeds", "2", "--episodes", "80",
                 "--eval-every", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "seed 0: 80 episodes" in text and "seed 1: 80 episodes" in text
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["estimator"] == "ccmvd" and cfg["resolved"]["episodes_per_iter"] == 8
    every = read_jsonl(out / "metrics.jsonl")
    assert [r["seed"] for r in every] == [0] * 10 + [1] * 10 and [r["step"] for r in every] == list(range(1, 21))
    rows = [r for r in every if r["seed"] == 1]
    assert {"iteration", "episodes", "steps", "mean_return", "max_return", "eval_return"} <= set(rows[0])
    assert rows[4]["eval_return"] is not None and rows[3]["eval_return"] is None
    assert [s["iteration"] for s in load_checkpoint(out / "checkpoint.pt")["experiment"]["seeds"]] == [10, 10]
    assert (out / "plots" / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 1 | 10 | 80 |" in (out / "summary.md").read_text()

    assert main(["rl", "eval", str(out), "--episodes", "3"]) == 0
    text = capsys.readouterr().out
    assert "seed 0: return" in text and "mean over 2 seeds" in text

    # more episodes for a finished run: --resume continues it
    assert main(["rl", "train", *FAST, "--episodes", "96", "--out", str(out), "--resume"]) == 0
    assert [r["iteration"] for r in read_jsonl(out / "metrics.jsonl") if r["seed"] == 0] == list(range(1, 13))


def test_variance_writes_a_figure(tmp_path, capsys) -> None:
    out = tmp_path / "var"
    assert main(["rl", "variance", "--env", "InvertedPendulum-v5", "--n", "2", "--m", "1", "--k", "2", "--repeats",
                 "4", "--warmup", "1", "--max-episode-steps", "30", "--evaluator", "serial", "--no-progress",
                 "--out", str(out)]) == 0
    assert "| InvertedPendulum-v5 | 2 | 1 | 2 | 8 | ccmvd |" in capsys.readouterr().out
    recs = json.loads((out / "variance.json").read_text())
    assert {r["estimator"] for r in recs} == {"ccmvd", "ccsf"}
    assert (out / "plots" / "variance_InvertedPendulum-v5.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "config.json").read_text())["command"] == "rl variance"


def test_variance_resumes_to_the_same_records(tmp_path) -> None:
    from stochgrad.rl.variance import VarianceConfig, run_variance

    cfg = dict(envs=["InvertedPendulum-v5", "Pendulum-v1"], n=[2], m=[1, 2], k=[2], repeats=3, warmup=1,
               max_episode_steps=20, evaluator="serial")
    full, _ = run_variance(VarianceConfig(**cfg), tmp_path / "full", progress=False)
    from stochgrad.rl.variance import RL_VARIANCE
    from stochgrad.runs import run

    def stop(exp, row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(RL_VARIANCE, VarianceConfig(**cfg), tmp_path / "cut", progress=False, callback=stop)
    again, _ = run_variance(VarianceConfig(**cfg), tmp_path / "cut", resume=True, progress=False)
    assert len(full) == 8 and again == full


@pytest.mark.parametrize("argv, message", [
    (["rl", "train", "--env", "Nope-v0", "--evaluator", "serial"], "env: cannot make Gymnasium environment 'Nope-v0'"),
    (["rl", "train", "--estimator", "reinforce", "--evaluator", "serial"], "estimator: unknown name 'reinforce'"),
    (["rl", "train", "--episodes", "0", "--evaluator", "serial"], "episodes: need a positive integer; got 0"),
    (["rl", "eval", "/nonexistent/run"], "is not a run directory"),
    (["rl", "variance", "--n", "4", "--m", "1", "--k", "1", "--evaluator", "serial"], "CCSF's second score function"),
])
def test_bad_input_gives_a_message_and_exit_code_2(tmp_path, capsys, argv, message) -> None:
    if argv[1] == "train":
        argv = [*argv, "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_nan_through_the_cli_names_the_environment_and_step(tmp_path, capsys) -> None:
    from stochgrad.rl.rollout import episode_seed

    bad = episode_seed(0, 2, 1)
    from stochgrad.rl.run import run_train
    from stochgrad.rl.trainer import TrainConfig

    cfg = TrainConfig(env="rl_test_envs:FaultyPendulum-v0", estimator="sf-antithetic", episodes=40,
                      episodes_per_iter=4, checkpoint_every=1, evaluator="serial",
                      env_kwargs={"nan_seed": bad, "what": "reward"})
    with pytest.raises(Exception) as info:
        run_train(cfg, tmp_path / "r", progress=False)
    assert "FaultyPendulum-v0 returned a non-finite reward" in str(info.value) and "step 5" in str(info.value)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["experiment"]["seeds"][0]["iteration"] == 2
    # resuming hits the same episode again: same error, checkpoint untouched
    assert main(["rl", "train", "--out", str(tmp_path / "r"), "--resume", "--evaluator", "serial",
                 "--no-progress"]) == 2
    assert "returned a non-finite reward" in capsys.readouterr().err
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before


def test_train_refuses_a_budget_below_one_iteration(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["rl", "train", *FAST, "--episodes", "5", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("stochgrad rl train: error: episodes: one iteration of ars on "
                                       "InvertedPendulum-v5 takes 8 episodes (episodes_per_iter); got a budget of 5\n")
    assert not (out / "config.json").exists()


def test_variance_at_the_policy_of_a_training_run(tmp_path, capsys) -> None:
    train = tmp_path / "train"
    assert main(["rl", "train", *FAST, "--estimator", "sf-antithetic", "--episodes", "16", "--out", str(train)]) == 0
    out = tmp_path / "var"
    assert main(["rl", "variance", "--env", "InvertedPendulum-v5", "--n", "2", "--m", "1", "--k", "2", "--repeats",
                 "3", "--warmup", "1", "--max-episode-steps", "30", "--evaluator", "serial", "--no-progress",
                 "--policy", str(train), "--out", str(out)]) == 0
    assert (out / "variance.json").exists()
    assert main(["rl", "variance", "--env", "Swimmer-v5", "--n", "2", "--m", "1", "--k", "2", "--evaluator", "serial",
                 "--no-progress", "--policy", str(train), "--out", str(tmp_path / "v2")]) == 2
    assert "was trained on InvertedPendulum-v5, not Swimmer-v5" in capsys.readouterr().err


def test_resume_with_another_environment_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["rl", "train", *FAST, "--episodes", "8", "--out", str(out)]) == 0
    before = (out / "metrics.jsonl").read_text()
    assert main(["rl", "train", "--env", "Swimmer-v5", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "env: saved 'InvertedPendulum-v5', given 'Swimmer-v5'" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before
