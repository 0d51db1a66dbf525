"""The one run abstraction: directory rules, resume rules, callbacks, interruption, options from configs."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import stochgrad as sg
from stochgrad.cli import main
from stochgrad.runs import Command, RunDirError, add_config_options, config_from_args, option, run
from stochgrad.runs.files import load_checkpoint, read_jsonl

COMPARE = ["compare", "--function", "sphere", "--dim", "2", "--estimators", "mvd", "--budgets", "4",
           "--repeats", "4", "--no-progress"]
OPTIMIZE = ["optimize", "--function", "sphere", "--dim", "3", "--budget", "64", "--no-progress"]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("first", "second", "name"), [(COMPARE, OPTIMIZE, "optimize"),
                                                       (OPTIMIZE, COMPARE, "compare")])
def test_another_commands_directory_is_refused_and_left_as_it_was(first, second, name, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*first, "--out", str(out)]) == 0
    before = _files(out)
    for extra in ([], ["--resume"]):
        assert main([*second, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert f"holds a 'stochgrad {first[0]}' run; 'stochgrad {name}' does not write into it" in err
    assert _files(out) == before


def test_resume_with_other_settings_lists_the_differences(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*OPTIMIZE, "--out", str(out)]) == 0
    before = _files(out)
    assert main(["optimize", "--out", str(out), "--resume", "--dim", "5", "--function", "rastrigin"]) == 2
    err = capsys.readouterr().err
    assert "function: saved 'sphere', given 'rastrigin'; dim: saved 3, given 5" in err
    assert "Only budget, evaluator, ray_address, target, time_limit, workers may change on --resume" in err
    assert _files(out) == before


def test_resume_takes_the_saved_settings_and_only_the_options_given(tmp_path) -> None:
    out = tmp_path / "run"
    assert main([*OPTIMIZE, "--seed", "3", "--out", str(out)]) == 0
    assert main(["optimize", "--out", str(out), "--resume", "--budget", "128", "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["function"] == "sphere" and saved["dim"] == 3 and saved["seed"] == 3 and saved["budget"] == 128
    straight = tmp_path / "straight"
    assert main(["optimize", "--function", "sphere", "--dim", "3", "--budget", "128", "--seed", "3",
                 "--no-progress", "--out", str(straight)]) == 0
    assert [r["best_f"] for r in read_jsonl(out / "metrics.jsonl")] == \
        [r["best_f"] for r in read_jsonl(straight / "metrics.jsonl")]


def test_a_foreign_config_json_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"function": "sphere"}))
    assert main([*OPTIMIZE, "--out", str(out)]) == 2
    assert "holds a config.json that no stochgrad command of this version wrote" in capsys.readouterr().err


def test_interrupting_says_how_to_continue(tmp_path, capsys, monkeypatch) -> None:
    from stochgrad.optim import run as optim_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optim_run.OptimizeExperiment, "step", interrupted)
    out = tmp_path / "run"
    assert main([*OPTIMIZE, "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().endswith(
        f"stochgrad optimize: interrupted; continue it with: stochgrad optimize --out {out} --resume")


@dataclass
class Counting:
    """A tiny experiment: counts to ``n``."""

    n: int = option(5, "how far to count", resumable=True)
    checkpoint_every: int = option(2, "steps between checkpoints")


class Counter:
    def __init__(self, config: Counting, run_dir: Path) -> None:
        self.config, self.i, self.finished = config, 0, None

    def stop_reason(self):
        return "done" if self.i >= self.config.n else None

    def step(self):
        self.i += 1
        return {"i": self.i}

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]

    def finish(self, run_dir, rows, stopped):
        self.finished = (len(rows), stopped)


COUNT = Command("count", Counting, Counter)


def test_run_numbers_steps_checkpoints_and_stops_on_the_callback(tmp_path) -> None:
    res = run(COUNT, Counting(n=5), tmp_path / "a", progress=False, callback=lambda e, row: row["i"] == 3)
    assert res.stopped == "callback" and res.experiment.finished == (3, "callback")
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl") == [{"step": k, "i": k} for k in (1, 2, 3)]
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt") == {"step": 3, "experiment": {"i": 3}}
    more = run(COUNT, Counting(n=7), tmp_path / "a", resume=True, progress=False)
    assert more.stopped == "done" and [r["i"] for r in more.rows] == list(range(1, 8))


def test_resume_cuts_the_metrics_back_to_the_checkpoint(tmp_path) -> None:
    def crash(e, row):
        if row["i"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(COUNT, Counting(n=5), tmp_path / "a", progress=False, callback=crash)
    assert len(read_jsonl(tmp_path / "a" / "metrics.jsonl")) == 3          # the checkpoint is at step 2
    res = run(COUNT, Counting(n=5), tmp_path / "a", resume=True, progress=False)
    assert [r["step"] for r in res.rows] == [1, 2, 3, 4, 5] and res.experiment.finished == (5, "done")


def test_run_directory_errors_are_named(tmp_path) -> None:
    with pytest.raises(RunDirError, match="resume: .* holds no run to resume"):
        run(COUNT, Counting(), tmp_path / "none", resume=True, progress=False)
    run(COUNT, Counting(), tmp_path / "a", progress=False)
    with pytest.raises(RunDirError, match="already holds a run; pass --resume"):
        run(COUNT, Counting(), tmp_path / "a", progress=False)
    with pytest.raises(RunDirError, match=r"made with other settings \(checkpoint_every: saved 2, given 3\)\. "
                                          r"Only n may change"):
        run(COUNT, Counting(checkpoint_every=3), tmp_path / "a", resume=True, progress=False)
    assert isinstance(RunDirError("x"), sg.StochgradError) and isinstance(RunDirError("x"), ValueError)


@dataclass
class Settings:
    name: str = option("a", "a name", choices=("a", "b"))
    sizes: list[int] = option([1, 2], "sizes")
    pair: tuple[str, ...] = option(("x",), "strings")
    flag: bool = option(False, "a switch")
    on: bool = option(True, "on unless --no-on")
    maybe: float | None = option(None, "optional")
    hidden: int = option(7, "not on the command line", cli=False)


def test_options_come_from_the_config_and_only_given_ones_count() -> None:
    p = argparse.ArgumentParser()
    add_config_options(p, Settings)
    assert "--hidden" not in p.format_help() and "(default: 1,2)" in p.format_help()
    args = p.parse_args(["--sizes", "3,4", "--pair", "u,v", "--flag", "--no-on", "--maybe", "0.5"])
    assert config_from_args(Settings, args) == Settings("a", [3, 4], ("u", "v"), True, False, 0.5, 7)
    assert config_from_args(Settings, p.parse_args([]), base=Settings(name="b", hidden=1)) == \
        Settings(name="b", hidden=1)
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "c"])
    with pytest.raises(SystemExit):
        p.parse_args(["--sizes", "3,x"])
