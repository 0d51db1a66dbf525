"""Files of a run directory: checked before any work, written atomically, never left half-written.

Every long command (compare, optimize, rl train, rlhf train) writes ``config.json``, metrics as JSON lines,
plots and a summary into one directory. Files are replaced atomically (temporary file, then rename); JSON lines
are appended one whole line at a time, and readers skip a torn last line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from stochgrad.errors import InvalidArgumentError


def prepare_run_dir(path: str | Path, argument: str = "out") -> Path:
    """Create ``path`` (and parents) and prove it is writable, before any work is done.

    Raises:
      InvalidArgumentError: naming ``argument`` and the reason, if the directory cannot be created or written.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InvalidArgumentError(
            f"{argument}: cannot write the run directory {str(p)!r}: {exc.strerror or exc}") from None
    return p


def check_writable(path: str | Path, argument: str = "out") -> None:
    """Raise unless ``path`` could be created and written, creating nothing: the nearest existing folder on its
    way must be a writable directory.

    Raises:
      InvalidArgumentError: naming ``argument`` and the reason.
    """
    p = Path(path).absolute()
    first = next(q for q in (p, *p.parents) if q.exists())
    reason = None
    if not first.is_dir():
        reason = f"{str(first)!r} is not a directory"
    elif not os.access(first, os.W_OK | os.X_OK):
        reason = f"{str(first)!r} is not writable"
    if reason:
        raise InvalidArgumentError(f"{argument}: cannot write the run directory {str(path)!r}: {reason}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """A matplotlib figure and its axes (as ``plt.subplots``) made without pyplot, so no backend or display is
    chosen for the whole process; write it with :func:`save_figure`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Let ``write(tmp)`` fill a fresh directory beside ``path``, then rename it into place, so ``path`` is
    either the old complete directory or the new one, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lay out a matplotlib figure, write it to ``path`` as PNG (parents created, atomically) and close it."""
    import io

    path = Path(path)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if getattr(fig.canvas, "manager", None) is not None:      # made by pyplot: release it there
        import matplotlib.pyplot as plt

        plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as one line (flushed), so a crash can at worst tear the last line."""
    with Path(path).open("a") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
        fh.flush()


def read_jsonl(path: Path) -> list[dict]:
    """Records from a JSON-lines file; a torn last line from an interrupted write is ignored."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_jsonl(path: Path, keep: int) -> None:
    """Keep the first ``keep`` records of a JSON-lines file (used on resume to drop lines written after the
    checkpoint being resumed from)."""
    records = read_jsonl(path)[:keep]
    atomic_write_text(Path(path), "".join(json.dumps(r, default=float) + "\n" for r in records))


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file, then rename: the previous checkpoint survives any crash."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint without executing code (``weights_only=True``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
