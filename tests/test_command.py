"""The ``stochgrad`` command itself: --version, --help listing every command, and missing extras as one line."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

import stochgrad as sg
from stochgrad.cli import main
from stochgrad.extras import EXTRAS, missing_modules, require

#: One command line per subcommand that needs an extra, with the extra it needs.
NEEDS = [
    (["rl", "train", "--env", "Pendulum-v1"], "rl"),
    (["rl", "eval", "runs/none"], "rl"),
    (["rl", "variance"], "rl"),
    (["rlhf", "train", "--model", "m"], "rlhf"),
    (["rlhf", "demo"], "rlhf"),
    (["rlhf", "variance", "--model", "m"], "rlhf"),
    (["rlhf", "pretrain"], "rlhf"),
]


def block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` unimportable for this test, as on an install without their extra."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_version_is_the_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"stochgrad {sg.__version__}"
    assert sg.__version__ == importlib.metadata.version("stochgrad")


def test_help_lists_every_command_even_without_extras(monkeypatch, capsys) -> None:
    block(monkeypatch, *[m for mods in EXTRAS.values() for m in mods])
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("compare", "optimize", "rl", "rlhf"):
        assert f"    {command} " in out


@pytest.mark.parametrize(("argv", "extra"), NEEDS, ids=[" ".join(a[:2]) for a, _ in NEEDS])
def test_a_missing_extra_is_one_line_naming_it(argv, extra, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    block(monkeypatch, EXTRAS[extra][0])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"stochgrad {argv[0]} {argv[1]} needs the '{extra}' extra (missing module "
                   f"{EXTRAS[extra][0]!r}); install it with: pip install 'stochgrad[{extra}]'\n")
    assert list(tmp_path.iterdir()) == []               # nothing was written


def test_the_command_runs_again_when_the_extra_is_there(monkeypatch, capsys) -> None:
    """The check is not always on: with the extra, the same command gets past it (to its own error)."""
    if missing_modules("rl"):
        pytest.skip("needs the 'rl' extra")
    assert main(["rl", "eval", "no/such/run"]) == 2
    assert "extra" not in capsys.readouterr().err


def test_ray_evaluator_without_ray_names_the_extra(monkeypatch) -> None:
    block(monkeypatch, "ray")
    with pytest.raises(sg.MissingExtraError, match=r"evaluators.Ray needs the 'ray' extra \(missing module 'ray'\); "
                                                   r"install it with: pip install 'stochgrad\[ray\]'") as exc:
        sg.evaluators.Ray()
    assert exc.value.extra == "ray" and isinstance(exc.value, ImportError)


def test_rl_train_on_ray_without_ray_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    if missing_modules("rl"):
        pytest.skip("needs the 'rl' extra")
    block(monkeypatch, "ray")
    out = tmp_path / "run"
    assert main(["rl", "train", "--env", "Pendulum-v1", "--episodes", "8", "--evaluator", "ray", "--no-progress",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the 'ray' extra" in err and "pip install 'stochgrad[ray]'" in err
    assert not (out / "config.json").exists()


def test_an_import_of_an_extra_deep_in_a_command_is_named_too(monkeypatch, capsys, tmp_path) -> None:
    """If a command imports a module of an extra it did not declare, main still names the extra."""
    from stochgrad import cli, extras

    monkeypatch.setattr(cli, "require", lambda extra, what: None)       # as if the declaration were missing
    block(monkeypatch, "transformers", "tokenizers")
    assert extras.extra_providing("tokenizers.models") == "rlhf"
    assert main(["rlhf", "pretrain", "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs the 'rlhf' extra" in err and err.count("\n") == 1


def test_require_passes_when_installed_and_rejects_unknown_extras(monkeypatch) -> None:
    if not missing_modules("rl"):
        require("rl", "x")
    block(monkeypatch, "mujoco")
    assert missing_modules("rl") == ["mujoco"]
    with pytest.raises(KeyError, match="extra: unknown 'gpu'"):
        missing_modules("gpu")


def test_py_typed_is_shipped() -> None:
    from pathlib import Path

    assert (Path(sg.__file__).parent / "py.typed").exists()
