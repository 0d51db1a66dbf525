"""``stochgrad optimize``: run directory, resume after an interruption, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from stochgrad.cli import main
from stochgrad.optim.run import OptimizeConfig, run_optimize
from stochgrad.runs.files import load_checkpoint, read_jsonl


def test_optimize_writes_a_run_directory(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["optimize", "--function", "rosenbrock", "--dim", "4", "--estimator", "mvd", "--budget", "800",
                 "--no-progress", "--out", str(out)]) == 0
    assert "best f" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["command"] == "optimize" and saved["format"] == 1
    cfg = saved["config"]
    assert cfg["function"] == "rosenbrock" and cfg["budget"] == 800
    hist = read_jsonl(out / "metrics.jsonl")
    assert len(hist) == 50 and hist[-1]["n_evals"] == 800      # MVD on loc and scale (natural steps): 16 a step
    assert (out / "plots" / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert "stopped by: budget" in (out / "summary.md").read_text()
    assert load_checkpoint(out / "checkpoint.pt")["experiment"]["n_steps"] == 50
    assert [r["step"] for r in hist] == list(range(1, 51))


def test_interrupted_run_resumes_to_the_same_result(tmp_path) -> None:
    cfg = dict(function="ackley", dim=5, estimator="auto", budget=1200, checkpoint_every=7, seed=3)
    full, _ = run_optimize(OptimizeConfig(**cfg), tmp_path / "full", progress=False)

    def crash(opt, row):
        if opt.n_steps == 45:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_optimize(OptimizeConfig(**cfg), tmp_path / "cut", progress=False, callback=crash)
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 45        # 3 steps past the checkpoint at 42
    resumed, _ = run_optimize(OptimizeConfig(**cfg), tmp_path / "cut", resume=True, progress=False)
    assert torch.equal(resumed.loc, full.loc) and resumed.fun == full.fun and resumed.n_evals == full.n_evals
    a = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    assert [r["best_f"] for r in a] == [r["best_f"] for r in b]


def test_an_existing_run_is_not_overwritten(tmp_path, capsys) -> None:
    args = ["optimize", "--function", "sphere", "--dim", "3", "--budget", "100", "--no-progress", "--out",
            str(tmp_path / "run")]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume", "--budget", "200"]) == 0
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]["n_evals"] > 100


@pytest.mark.parametrize("args, message", [
    (["--function", "sphre"], "function: unknown name 'sphre'"),
    (["--estimator", "es"], "argument --estimator: invalid choice: 'es'"),
    (["--dim", "10", "--estimator", "mvd", "--popsize", "12"], "mvd needs at least 40 evaluations per estimate for "
                                                               "Normal with 20 component(s) in ['loc', 'scale']"),
])
def test_bad_input(tmp_path, capsys, args, message) -> None:
    try:
        code = main(["optimize", "--no-progress", "--out", str(tmp_path / "r"), *args])
    except SystemExit as exc:           # refused by the parser, from the choices declared in OptimizeConfig
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "config.json").exists()


def test_resume_without_a_run(tmp_path, capsys) -> None:
    assert main(["optimize", "--resume", "--no-progress", "--out", str(tmp_path / "none")]) == 2
    assert "holds no run to resume" in capsys.readouterr().err


def test_a_budget_below_one_step_is_a_named_error_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["optimize", "--budget", "5", "--no-progress", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("stochgrad optimize: error: budget: one step of StagedSearch (f(x0) twice, a "
                                       "gradient, a line-search trial) needs 24 evaluations of f; got a budget of 5\n")
    assert main(["optimize", "--estimator", "sf-antithetic", "--budget", "5", "--no-progress", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("stochgrad optimize: error: budget: one step of sf-antithetic with popsize 10 "
                                       "needs 10 evaluations of f; got a budget of 5\n")
    assert not (out / "config.json").exists()


def test_optimize_offers_the_natural_update_rule(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["optimize", "--function", "sphere", "--dim", "4", "--estimator", "sf-antithetic", "--optimizer",
                 "natural", "--fitness-shaping", "centered-ranks", "--budget", "400", "--no-progress",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["optimizer"] == "natural"


USER_MODULE = '''
import torch

def batched(x):
    return ((x - 1.0) ** 2).sum(-1)

def one_point(x):
    return float(((x - 1.0) ** 2).sum())

not_callable = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's in the working directory, as `stochgrad optimize --function mod:f` would see."""
    (tmp_path / "my_objectives.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_objectives"


@pytest.mark.parametrize("extra", [[], ["--per-point"], ["--per-point", "--evaluator", "process", "--workers", "2"],
                                   ["--evaluator", "process", "--workers", "2"]],
                         ids=["batched", "per-point", "per-point-processes", "batched-processes"])
def test_optimize_minimises_the_users_own_function(user_module, tmp_path, capsys, extra) -> None:
    fn = "one_point" if "--per-point" in extra else "batched"
    out = tmp_path / "run"
    assert main(["optimize", "--function", f"{user_module}:{fn}", "--dim", "3", "--estimator", "mvd", "--budget",
                 "240", "--optimizer", "natural", "--fitness-shaping", "centered-ranks", "--no-progress",
                 "--out", str(out), *extra]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert rows[-1]["n_evals"] == 240 and rows[-1]["best_f"] < rows[0]["best_f"]
    assert "global minimum" not in (out / "summary.md").read_text()
    if extra:
        straight = [r["best_f"] for r in read_jsonl(out / "metrics.jsonl")]
        ref = tmp_path / "ref"
        assert main(["optimize", "--function", f"{user_module}:batched", "--dim", "3", "--estimator", "mvd",
                     "--budget", "240", "--optimizer", "natural", "--fitness-shaping", "centered-ranks",
                     "--no-progress", "--out", str(ref)]) == 0
        assert straight == [r["best_f"] for r in read_jsonl(ref / "metrics.jsonl")]   # same numbers anywhere


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_x:f", "function: cannot import module 'no_such_module_x'"),
    ("my_objectives:missing", "function: 'my_objectives' has no attribute 'missing'"),
    ("my_objectives:not_callable", "function: 'my_objectives:not_callable' is a int, not a callable"),
    ("sphre", "function: unknown name 'sphre'; choose one of sphere"),
])
def test_a_bad_user_function_is_named(user_module, tmp_path, capsys, spec, message) -> None:
    assert main(["optimize", "--function", spec, "--no-progress", "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
