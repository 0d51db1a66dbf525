"""The one run loop of every long command: run directory, resume, checkpoints, progress, callbacks.

An :class:`Experiment` says how to take one step, how to checkpoint and restore itself and how to finish;
:func:`run` owns every rule the commands share:

- the run directory: ``config.json`` (``{"command", "format", "config", ...}``), ``metrics.jsonl`` (one row per
  step, numbered by ``step``), ``checkpoint.pt`` (atomic; ``{"step", "experiment"}``), ``plots/`` and
  ``summary.md`` written by the experiment's ``finish``;
- a directory that holds another command's run is refused, and so is one that holds a run when ``resume`` is
  not asked for;
- ``resume`` with other settings is refused with the list of differences; only fields declared resumable
  (:func:`stochgrad.runs.config.option`) may change;
- on resume the metrics are cut back to the checkpoint's step and the run goes on bit-exactly;
- one callback signature, ``callback(experiment, row) -> stop?``, and one progress bar.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stochgrad.errors import InvalidArgumentError
from stochgrad.runs.config import config_from_dict, config_to_dict, differences, resumable_fields
from stochgrad.runs.files import (
    append_jsonl,
    atomic_write_json,
    check_writable,
    load_checkpoint,
    prepare_run_dir,
    read_jsonl,
    save_checkpoint,
    truncate_jsonl,
)

#: Version of the run-directory layout written in config.json.
FORMAT = 1
CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint.pt"


class RunDirError(InvalidArgumentError):
    """The run directory cannot be used for this run (another command's, already used, other settings)."""


class Experiment(Protocol):
    """What a long command is to :func:`run`.

    Optional methods :func:`run` uses when present: ``progress() -> (done, total)`` and ``unit`` (the progress
    bar), ``postfix(row) -> dict`` (shown on the bar), ``resolved() -> dict`` (defaults the settings resolved
    to, saved in config.json), ``restored(run_dir, step)`` (cut side files back to ``step`` on resume) and
    ``close()`` (always called at the end).
    """

    def stop_reason(self) -> str | None:
        """None while there is work left, else why the run ends ("budget", "target", ...)."""

    def step(self) -> dict[str, Any]:
        """Take one step; return its metrics row (JSON values; ``step`` is added by :func:`run`)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors, numbers, lists; loaded with weights_only=True)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output."""

    def finish(self, run_dir: Path, rows: list[dict[str, Any]], stopped: str) -> None:
        """Write plots and ``summary.md`` from all rows of the run (earlier sessions' included)."""


@dataclass(frozen=True)
class Command:
    """A command that runs through :func:`run`.

    Attributes:
      name: as the user types it after ``stochgrad`` ("optimize", "rl train"); written in config.json.
      config_type: the settings dataclass (fields declared with :func:`~stochgrad.runs.config.option`).
      build: ``(config, run_dir) -> Experiment``; may raise a named error before anything is written.
    """

    name: str
    config_type: type
    build: Callable[[Any, Path], Experiment]


@dataclass
class RunResult:
    """The end of a run: the experiment in its final state, every metrics row, the directory, why it stopped."""

    experiment: Any
    rows: list[dict[str, Any]]
    run_dir: Path
    stopped: str


def read_run_config(out: str | Path) -> dict[str, Any] | None:
    """The parsed config.json of run directory ``out``, or None where there is none.

    Raises:
      RunDirError: config.json is not one that :func:`run` wrote.
    """
    path = Path(out) / CONFIG
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"out: {str(path)!r} is not a stochgrad run configuration ({exc})") from None
    if not isinstance(data, dict) or "command" not in data or "config" not in data:
        raise RunDirError(f"out: {str(Path(out))!r} holds a config.json that no stochgrad command of this version "
                          "wrote; choose another --out")
    return data


def saved_config(command: Command, out: str | Path) -> Any | None:
    """The settings of the ``command`` run in ``out`` (None if ``out`` holds no run; refused if another's)."""
    data = read_run_config(out)
    if data is None:
        return None
    _check_command(command, data, Path(out))
    return config_from_dict(command.config_type, data["config"], where=f"{Path(out) / CONFIG}")


def _check_command(command: Command, data: dict, run_dir: Path) -> None:
    if data["command"] != command.name:
        raise RunDirError(f"out: {str(run_dir)!r} holds a 'stochgrad {data['command']}' run; 'stochgrad "
                          f"{command.name}' does not write into it. Choose another --out")
    if data.get("format") != FORMAT:
        raise RunDirError(f"out: {str(run_dir)!r} holds a run in layout format {data.get('format')!r}; this "
                          f"version reads format {FORMAT}. Choose another --out")


def _check_resume(command: Command, saved: Any, given: Any, run_dir: Path) -> None:
    free = set(resumable_fields(command.config_type))
    fixed = {k: v for k, v in differences(saved, given).items() if k not in free}
    if fixed:
        listed = "; ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in fixed.items())
        may = ", ".join(sorted(free)) or "nothing"
        raise RunDirError(f"resume: the run in {str(run_dir)!r} was made with other settings ({listed}). Only "
                          f"{may} may change on --resume; drop the other options or choose another --out")


def run(command: Command, config: Any, out: str | Path, resume: bool = False, progress: bool = True,
        callback: Callable[[Any, dict], bool | None] | None = None) -> RunResult:
    """Run (or, with ``resume``, continue) ``command`` with settings ``config`` in the run directory ``out``.

    Args:
      command: the command.
      config: its settings; on resume they must equal the saved ones but for resumable fields.
      out: the run directory (created).
      resume: continue the run in ``out`` from its checkpoint.
      progress: show a progress bar.
      callback: ``callback(experiment, row)`` after each row is written; returning True stops the run.
    Returns:
      :class:`RunResult`.
    Raises:
      RunDirError: ``out`` holds another command's run, holds a run and ``resume`` is False, holds none and
        ``resume`` is True, or was made with other settings.
    """
    run_dir = Path(out)
    data = read_run_config(run_dir)
    if data is not None:
        _check_command(command, data, run_dir)
    metrics, ckpt = run_dir / METRICS, run_dir / CHECKPOINT
    if resume:
        if data is None:
            raise RunDirError(f"resume: {str(run_dir)!r} holds no run to resume (no {CONFIG})")
        saved = config_from_dict(command.config_type, data["config"], where=str(run_dir / CONFIG))
        _check_resume(command, saved, config, run_dir)
    elif data is not None or ckpt.exists() or read_jsonl(metrics):
        raise RunDirError(f"out: {str(run_dir)!r} already holds a run; pass --resume to continue it or choose "
                          "another --out")
    if hasattr(config, "validate"):
        config.validate()
    check_writable(run_dir)
    experiment = command.build(config, run_dir)       # may still refuse the settings: nothing is written yet
    bar = None
    try:
        prepare_run_dir(run_dir)
        resolved = experiment.resolved() if hasattr(experiment, "resolved") else {}
        atomic_write_json(run_dir / CONFIG, {"command": command.name, "format": FORMAT,
                                             "config": config_to_dict(config), **resolved})
        step = 0
        if resume and ckpt.exists():
            state = load_checkpoint(ckpt)
            experiment.load_state_dict(state["experiment"])
            step = int(state["step"])
        truncate_jsonl(metrics, step)
        if hasattr(experiment, "restored"):
            experiment.restored(run_dir, step)
        rows = read_jsonl(metrics)
        every = int(getattr(config, "checkpoint_every", 1))
        if progress and hasattr(experiment, "progress"):
            from tqdm.auto import tqdm

            done, total = experiment.progress()
            bar = tqdm(total=total, initial=min(done, total), unit=getattr(experiment, "unit", "step"),
                       desc=command.name, dynamic_ncols=True)
        stopped = experiment.stop_reason()
        while stopped is None:
            step += 1
            row = {"step": step, **experiment.step()}
            append_jsonl(metrics, row)
            rows.append(row)
            if step % every == 0:
                save_checkpoint(ckpt, {"step": step, "experiment": experiment.state_dict()})
            if bar is not None:
                done, total = experiment.progress()
                bar.update(min(done, total) - bar.n)
                if hasattr(experiment, "postfix"):
                    bar.set_postfix(experiment.postfix(row), refresh=False)
            if callback is not None and callback(experiment, row):
                stopped = "callback"
                break
            stopped = experiment.stop_reason()
        save_checkpoint(ckpt, {"step": step, "experiment": experiment.state_dict()})
        if bar is not None:
            bar.close()
            bar = None
        experiment.finish(run_dir, rows, stopped)
    finally:
        if bar is not None:
            bar.close()
        if hasattr(experiment, "close"):
            experiment.close()
    return RunResult(experiment, rows, run_dir, stopped)
