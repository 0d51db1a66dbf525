"""``stochgrad compare`` end to end: run directory, plots, table, resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stochgrad.cli import main
from stochgrad.runs.files import load_checkpoint, read_jsonl, save_checkpoint

SMALL = ["--function", "sphere,rosenbrock", "--dim", "2,5", "--estimators", "sf-loo,mvd,pathwise",
         "--budgets", "2D,4D", "--repeats", "20", "--no-progress"]


def test_compare_writes_a_complete_run_directory(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["compare", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "relative MSE" in printed and "sf-loo" in printed and str(out) in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["command"] == "compare"
    config = saved["config"]
    assert config["estimators"] == ["sf-loo", "mvd", "pathwise"] and config["repeats"] == 20
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 25))
    assert len(records) == 2 * 2 * 2 * 3
    assert {r["n_evals"] for r in records if r["dim"] == 5} == {10, 20}
    header = (out / "records.csv").read_text().splitlines()[0]
    assert "rel_mse" in header and "cos_p10" in header
    for fn in ("sphere", "rosenbrock"):
        for kind in ("rel_mse", "cosine", "arrows_2d"):
            png = out / "plots" / f"{kind}_{fn}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert "| function | D | evals | sf-loo | mvd | pathwise |" in summary


def test_compare_resumes_without_redoing_finished_measurements(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["compare", "--function", "sphere", "--dim", "3", "--estimators", "sf-loo,mvd", "--budgets", "6,12",
            "--repeats", "10", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    full = read_jsonl(out / "metrics.jsonl")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])   # killed mid-write
    ckpt = load_checkpoint(out / "checkpoint.pt")
    save_checkpoint(out / "checkpoint.pt", {"step": 2, "experiment": {"next": 2}})      # ... after step 2
    assert ckpt["step"] == 4
    assert main(args) == 2                                       # a run is there: --resume says what to do
    assert main([*args, "--resume"]) == 0
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds_per_estimate"} for r in rows]  # noqa: E731
    again = read_jsonl(out / "metrics.jsonl")
    assert again[:2] == full[:2] and untimed(again) == untimed(full)


def test_resuming_with_other_settings_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    base = ["compare", "--function", "sphere", "--dim", "3", "--estimators", "mvd", "--budgets", "6",
            "--no-progress", "--out", str(out)]
    assert main([*base, "--repeats", "10"]) == 0
    before = (out / "summary.md").read_text()
    assert main([*base, "--repeats", "11", "--resume"]) == 2
    assert ("the run in '" + str(out) + "' was made with other settings (repeats: saved 10, given 11). Only "
            "nothing may change on --resume") in capsys.readouterr().err
    assert main(["compare", "--function", "ackley", "--dim", "3", "--estimators", "mvd", "--budgets", "6",
                 "--no-progress", "--out", str(out), "--resume"]) == 2
    assert "functions: saved ['sphere'], given ['ackley']" in capsys.readouterr().err
    assert (out / "summary.md").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--function", "rosenbrok"], "unknown name 'rosenbrok'; choose one of sphere, ellipsoid, rosenbrock"),
    (["--estimators", "sf-loo,mvdd"], "unknown name 'mvdd'; choose one of sf, sf-mean, sf-loo"),
    (["--dim", "10", "--estimators", "mvd", "--budgets", "12"],
     "mvd needs at least 20 evaluations per estimate at dim 10 (params loc); budget '12' gives 12"),
    (["--budgets", "ten"], "'ten' is not a positive number of evaluations"),
    (["--repeats", "1"], "repeats: need at least 2"),
])
def test_bad_input_is_reported_before_any_work(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "never"
    assert main(["compare", "--no-progress", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not out.exists()


def test_a_run_directory_that_cannot_be_written_is_reported_before_any_work(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["compare", "--function", "sphere", "--dim", "2", "--budgets", "4", "--no-progress",
                 "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "out: cannot write the run directory" in err and "a-file/run" in err


def test_help_explains_every_option() -> None:
    text = subprocess.run([sys.executable, "-m", "stochgrad", "compare", "--help"], capture_output=True, text=True,
                          check=True).stdout
    for option in ("--function", "--dim", "--estimators", "--budgets", "--repeats", "--scale", "--params", "--seed",
                   "--out", "--no-progress"):
        assert option in text
    assert "ackley" in text and "sf-antithetic" in text
