"""The demo end to end with tiny settings: every artefact is written, and a second run reuses them."""

from __future__ import annotations

import json

from stochgrad.rlhf.demo import DemoConfig, run_demo


def test_the_demo_writes_its_run_directory_and_reuses_it(tmp_path) -> None:
    config = DemoConfig(estimators=("reinforce", "rloo"), steps=2, completions_per_step=8, pretrain_steps=20,
                        n_sentences=400, variance_repeats=3, eval_k=1, max_new_tokens=8)
    lines: list[str] = []
    summary = run_demo(config, tmp_path / "demo", progress=False, log=lines.append)
    out = tmp_path / "demo"
    assert set(summary["results"]) == {"reinforce", "rloo"} and set(summary["variance"]) == {"reinforce", "rloo"}
    for name in ("reinforce", "rloo"):
        assert summary["results"][name]["completions"] == 16
        assert (out / name / "final" / "config.json").exists() and (out / name / "metrics.jsonl").exists()
    assert (out / "plots" / "reward_vs_completions.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "demo.json").read_text())["config"]["steps"] == 2
    printed = "\n".join(lines)
    assert "gain/1k compl." in printed and "examples (same prompts and random numbers), before:" in printed
    assert "after rloo:" in printed
    trained = (out / "rloo" / "metrics.jsonl").read_text()
    again: list[str] = []
    repeat = run_demo(config, out, resume=True, progress=False, log=again.append)      # finished: nothing redone
    assert repeat["results"] == summary["results"] and (out / "rloo" / "metrics.jsonl").read_text() == trained
    assert not any("pretraining" in line or "fine-tuning" in line for line in again)
    assert any("gain/1k compl." in line for line in again)
    fresh: list[str] = []
    run_demo(config, tmp_path / "other", progress=False, log=fresh.append)
    assert not any("reusing" in line for line in fresh)
    (tmp_path / "other" / "config.json").unlink()                 # as if only `rlhf pretrain` had run there
    for p in (tmp_path / "other").iterdir():
        if p.name != "base-model":
            import shutil
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    reused: list[str] = []
    again_summary = run_demo(config, tmp_path / "other", progress=False, log=reused.append)
    assert any("reusing" in line for line in reused)
    assert again_summary["results"]["rloo"]["after"] == summary["results"]["rloo"]["after"]


def test_an_interrupted_demo_resumes_to_the_same_results(tmp_path) -> None:
    import pytest

    from stochgrad.rlhf.demo import demo_command
    from stochgrad.runs import run

    config = DemoConfig(estimators=("reinforce", "rloo"), steps=2, completions_per_step=8, pretrain_steps=20,
                        n_sentences=400, variance_repeats=3, eval_k=1, max_new_tokens=8)
    quiet = []
    full = run_demo(config, tmp_path / "full", progress=False, log=quiet.append)

    def stop(experiment, row):
        if row["phase"] == "variance" and row["estimator"] == "rloo":      # after the third of five steps
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(demo_command(False, quiet.append), config, tmp_path / "cut", progress=False, callback=stop)
    assert not (tmp_path / "cut" / "demo.json").exists()
    again = run_demo(config, tmp_path / "cut", resume=True, progress=False, log=quiet.append)
    untimed = {n: {k: v for k, v in s.items() if k != "seconds_per_estimate"} for n, s in full["variance"].items()}
    assert {n: {k: v for k, v in s.items() if k != "seconds_per_estimate"} for n, s in again["variance"].items()} \
        == untimed
    assert again["before"] == full["before"]
    assert {k: v["after"] for k, v in again["results"].items()} == {k: v["after"] for k, v in full["results"].items()}
