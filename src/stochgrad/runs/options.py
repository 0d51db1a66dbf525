"""The options every long command shares (``--out``, ``--resume``, ``--no-progress``) and the settings a command
line asks for: on ``--resume`` the saved settings with only the options given changed (so a default never
counts as a change), otherwise the library defaults with the options given."""

from __future__ import annotations

import argparse
from typing import Any

from stochgrad.runs.config import add_config_options, config_from_args
from stochgrad.runs.run import Command, saved_config


def add_run_options(parser: argparse.ArgumentParser, command: Command, default_out: str,
                    skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> None:
    """The config's options, then ``--out``, ``--resume`` and ``--no-progress``, each with one meaning."""
    add_config_options(parser, command.config_type, skip=skip, defaults=defaults)
    parser.add_argument("--out", default=default_out, help=f"run directory (default: {default_out})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint with its saved settings; only "
                             "resumable settings (such as a larger budget) may be given again with new values")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run_command=command)


def config_for(command: Command, args: argparse.Namespace, **defaults: Any) -> Any:
    """The settings ``args`` asks for (``defaults`` are the command line's own defaults for a new run)."""
    base = saved_config(command, args.out) if args.resume else None
    return config_from_args(command.config_type, args, base=base, **({} if base is not None else defaults))
