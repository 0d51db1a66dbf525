"""``run_train`` and ``stochgrad rlhf``: reward goes up, exact resume, a complete run directory, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from stochgrad.cli import main
from stochgrad.errors import BudgetError, EvaluationError, InvalidArgumentError
from stochgrad.rlhf.demo_data import EVAL_PROMPTS
from stochgrad.rlhf.evaluate import evaluate
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import VaderReward
from stochgrad.rlhf.trainer import TrainConfig, run_train
from stochgrad.runs.files import load_checkpoint, read_jsonl

VOLATILE = ("seconds", "cpu_seconds", "seconds_sample", "seconds_reward")


def small(model, **kw) -> TrainConfig:
    base = {"model": str(model), "estimator": "rloo", "k": 4, "completions_per_step": 16, "steps": 6, "lr": 1e-3,
                "max_new_tokens": 10, "checkpoint_every": 2, "sample_every": 2, "seed": 3}
    base.update(kw)
    return TrainConfig(**base)


def test_a_short_run_increases_the_held_out_reward(tmp_path, tiny_model_dir) -> None:
    reward = VaderReward()
    before = evaluate(Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=10), reward, EVAL_PROMPTS, k=8)
    res = run_train(small(tiny_model_dir, steps=30, lr=1e-3), tmp_path / "run", progress=False)
    after = evaluate(res.policy, reward, EVAL_PROMPTS, k=8)
    assert len(res.records) == 30 and res.records[-1]["samples_seen"] == 480
    se = (before.reward_se ** 2 + after.reward_se ** 2) ** 0.5
    assert after.reward - before.reward > max(0.15, 3 * se), (before.reward, after.reward)


def test_resume_after_an_interruption_continues_exactly(tmp_path, tiny_model_dir) -> None:
    straight = run_train(small(tiny_model_dir), tmp_path / "straight", progress=False)

    def interrupt(experiment, record):
        if record["step"] == 5:          # after the step-4 checkpoint, before the step-6 one
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_train(small(tiny_model_dir), out, progress=False, callback=interrupt)
    assert len(read_jsonl(out / "metrics.jsonl")) == 5
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4
    resumed = run_train(small(tiny_model_dir, steps=6), out, resume=True, progress=False)

    strip = [{k: v for k, v in r.items() if k not in VOLATILE} for r in straight.records]
    assert [{k: v for k, v in r.items() if k not in VOLATILE} for r in resumed.records] == strip
    assert [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_jsonl(out / "metrics.jsonl")] == strip
    a, b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    a, b = a["experiment"], b["experiment"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
    assert torch.equal(a["generator"], b["generator"])
    assert read_jsonl(out / "samples.jsonl") == read_jsonl(tmp_path / "straight" / "samples.jsonl")


def test_the_run_directory_is_complete_and_loadable(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "run"
    run_train(small(tiny_model_dir, estimator="grpo", k=4, steps=2), out, progress=False)
    saved = json.loads((out / "config.json").read_text())
    assert saved["command"] == "rlhf train"
    config = saved["config"]
    assert config["estimator"] == "grpo" and config["k"] == 4
    rec = read_jsonl(out / "metrics.jsonl")[-1]
    for key in ("step", "samples_seen", "reward_mean", "kl", "length_mean", "loss", "grad_norm"):
        assert key in rec
    assert rec["samples_seen"] == 32
    samples = read_jsonl(out / "samples.jsonl")
    assert samples and {"step", "prompt", "completion", "reward"} <= set(samples[0])
    ckpt = load_checkpoint(out / "checkpoint.pt")["experiment"]            # weights_only=True
    assert {"model", "optimizer", "generator", "estimator", "step"} <= set(ckpt)
    for name in ("reward", "kl"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = Policy.from_pretrained(str(out / "final"))
    assert torch.equal(next(final.parameters()), ckpt["model"]["transformer.wte.weight"])
    assert "reward (step mean)" in (out / "summary.md").read_text()
    assert not [p for p in out.rglob(".*") if p.name != ".write-test"]      # no temporary files left


def test_an_existing_run_is_not_overwritten(tmp_path, tiny_model_dir) -> None:
    run_train(small(tiny_model_dir, steps=1), tmp_path / "run", progress=False)
    with pytest.raises(InvalidArgumentError, match="out: .* already holds a run; pass --resume"):
        run_train(small(tiny_model_dir, steps=1), tmp_path / "run", progress=False)


@pytest.mark.parametrize("fn, message", [
    (lambda p, c: [0.0] * (len(c) + 1), "reward: the reward function returned 17 value"),
    (lambda p, c: [float("nan")] * len(c), "reward: the reward function returned nan for completion 0"),
])
def test_a_bad_reward_stops_the_run_with_a_clear_error_and_whole_files(tmp_path, tiny_model_dir, fn,
                                                                       message) -> None:
    out = tmp_path / "run"
    with pytest.raises(EvaluationError, match=message):
        run_train(small(tiny_model_dir), out, progress=False, reward_fn=fn)
    assert json.loads((out / "config.json").read_text())["config"]["model"] == str(tiny_model_dir)
    assert (out / "metrics.jsonl").read_text() == ""
    assert not (out / "checkpoint.pt").exists()
    assert not [p for p in out.rglob(".*")]


def test_bad_input_is_refused_before_anything_is_written(tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "never"
    with pytest.raises(InvalidArgumentError, match=r"model: '.*missing-model' is not a directory"):
        run_train(small(tmp_path / "missing-model"), out, progress=False)
    with pytest.raises(BudgetError, match="k: the leave-one-out baseline needs at least 2 completions"):
        run_train(small(tiny_model_dir, k=1), out, progress=False)
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    with pytest.raises(InvalidArgumentError, match=r"prompts: the file '.*prompts.txt' holds no prompts"):
        run_train(small(tiny_model_dir, prompts=str(empty)), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="prompts: the given list holds no prompts"):
        run_train(small(tiny_model_dir), out, progress=False, prompts=[])
    with pytest.raises(BudgetError, match="completions_per_step: 10 is not a multiple of k=4"):
        run_train(small(tiny_model_dir, completions_per_step=10), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="resume: .* holds no run to resume"):
        run_train(small(tiny_model_dir), out, resume=True, progress=False)
    assert not out.exists()
    # The same through the command line: exit code 2 and the message, nothing written.
    assert main(["rlhf", "train", "--model", str(tmp_path / "missing-model"), "--out", str(out)]) == 2
    assert main(["rlhf", "train", "--model", str(tiny_model_dir), "--estimator", "rloo", "--k", "1",
                 "--out", str(out)]) == 2
    assert main(["rlhf", "train", "--model", str(tiny_model_dir), "--prompts", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model: " in err and "is not a directory" in err
    assert "k: the leave-one-out baseline needs at least 2" in err
    assert "holds no prompts" in err
    assert not out.exists()


def test_the_train_command_end_to_end(tmp_path, tiny_model_dir, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\ni think the food is\n")
    out = tmp_path / "cli"
    args = ["rlhf", "train", "--model", str(tiny_model_dir), "--reward", "vader", "--estimator", "reinforce++",
            "--prompts", str(prompts), "--completions-per-step", "4", "--steps", "2", "--max-new-tokens", "8",
            "--lr", "1e-3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "reward (step mean)" in capsys.readouterr().out
    again = [a if a != "2" else "3" for a in args]                     # --steps 3
    assert main([*again, "--resume"]) == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
    # Resuming needs only the run directory: the saved settings name the model.
    assert main(["rlhf", "train", "--out", str(out), "--steps", "4", "--resume", "--no-progress"]) == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert main(["rlhf", "train", "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    assert "model: give the directory (or hub id) of a causal LM" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
