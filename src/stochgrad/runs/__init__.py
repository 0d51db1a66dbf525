"""The one run abstraction of every long command (see :mod:`stochgrad.runs.run`), the files of a run directory
(:mod:`stochgrad.runs.files`) and settings declared once for library, ``config.json`` and CLI
(:mod:`stochgrad.runs.config`)."""

from stochgrad.runs.config import (
    add_config_options,
    config_from_args,
    config_from_dict,
    config_to_dict,
    differences,
    option,
)
from stochgrad.runs.run import Command, Experiment, RunDirError, RunResult, read_run_config, run, saved_config

__all__ = ["Command", "Experiment", "RunDirError", "RunResult", "add_config_options", "config_from_args",
           "config_from_dict", "config_to_dict", "differences", "option", "read_run_config", "run", "saved_config"]
