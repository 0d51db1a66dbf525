"""Run settings as dataclasses: one place for each option's name, default, help, choices and resumability.

A command's settings are one dataclass whose fields are declared with :func:`option`. From it come
``config.json`` (:func:`config_to_dict` / :func:`config_from_dict`), the refusal of a ``--resume`` with other
settings (:func:`differences`), and the command-line options (:func:`add_config_options` /
:func:`config_from_args`), so the CLI cannot drift from the library.

Example::

    @dataclass
    class MyConfig:
        budget: int = option(1000, "evaluations of f in total", resumable=True)
        estimator: str = option("auto", "gradient estimator", choices=("auto", "mvd"))
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from stochgrad.errors import InvalidArgumentError

#: Command-line option types that take a comma-separated list.
_LISTS = (list, tuple, Sequence)


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None, resumable: bool = False,
           flags: Sequence[str] | None = None, cli: bool = True, metavar: str | None = None) -> Any:
    """A dataclass field with what the command line and ``--resume`` need to know about it.

    Args:
      default: the default value (a list or dict is copied for every instance).
      help: one line for ``--help``; the default is appended.
      choices: the allowed values, if a fixed set.
      resumable: the field may differ on ``--resume`` (a larger budget, where the work runs); every other
        field must keep its saved value.
      flags: the option strings (default: ``--name-with-dashes``; a bool that defaults to True becomes
        ``--no-name``).
      cli: whether the command line offers it.
      metavar: the placeholder shown in ``--help``.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "resumable": resumable,
            "flags": tuple(flags) if flags else None, "cli": cli, "metavar": metavar}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` is allowed)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return tp, False


def config_to_dict(config: Any) -> dict[str, Any]:
    """The settings as JSON-ready values (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def config_from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Rebuild ``cls`` from :func:`config_to_dict`'s output.

    A field missing from ``data`` (a run written before the field existed) takes the value in ``cls.ABSENT_MEANS``
    if the class declares one there (what the older version did), else its default.

    Raises:
      InvalidArgumentError: ``data`` names a setting ``cls`` does not have (a run of another version).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown setting(s) {unknown} for {cls.__name__}; the run was written "
                                   "by another version of stochgrad")
    hints = _hints(cls)
    values = {k: v for k, v in getattr(cls, "ABSENT_MEANS", {}).items() if k not in data}
    for k, v in data.items():
        tp, _ = _unwrap(hints[k])
        values[k] = tuple(v) if typing.get_origin(tp) is tuple and isinstance(v, list) else v
    return cls(**values)


def differences(saved: Any, given: Any) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ: name -> (saved, given), in field order."""
    a, b = config_to_dict(saved), config_to_dict(given)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def resumable_fields(cls: type) -> list[str]:
    """The fields declared ``resumable``: they may change on ``--resume``."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable")]


# -- the command line ------------------------------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser_of(tp: Any) -> tuple[Callable[[str], Any], bool]:
    """(a function from the option's text to the value, whether the option is a comma-separated list)."""
    origin = typing.get_origin(tp)
    if origin in _LISTS or tp in _LISTS:
        (item, *_) = typing.get_args(tp) or (str,)
        convert = _parser_of(item)[0]

        def parse_list(text: str) -> list:
            parts = [t.strip() for t in text.split(",") if t.strip()]
            try:
                return [convert(t) for t in parts]
            except (TypeError, ValueError):
                raise argparse.ArgumentTypeError(f"expected comma-separated {getattr(item, '__name__', item)} "
                                                 f"values, got {text!r}") from None

        return parse_list, True
    if tp in (int, float, str):
        return tp, False
    return str, False


def add_config_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = (),
                       defaults: dict[str, Any] | None = None) -> None:
    """Add one option per field of ``cls`` (declared with :func:`option`) to ``parser``.

    An option that is not given leaves no attribute on the namespace (``argparse.SUPPRESS``), so
    :func:`config_from_args` can tell what the user asked for from what is a default; ``defaults`` overrides
    the defaults shown in ``--help`` where the command's default differs from the library's.
    """
    hints = _hints(cls)
    shown = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
             for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
             or f.default_factory is not dataclasses.MISSING}
    shown.update(defaults or {})
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", False):
            continue
        tp, optional = _unwrap(hints[f.name])
        default = shown.get(f.name)
        text = meta["help"]
        if tp is bool:
            if default:
                parser.add_argument(*(meta["flags"] or [_flag("no_" + f.name)]), dest=f.name, action="store_false",
                                    default=argparse.SUPPRESS, help=text)
            else:
                parser.add_argument(*(meta["flags"] or [_flag(f.name)]), dest=f.name, action="store_true",
                                    default=argparse.SUPPRESS, help=text)
            continue
        convert, is_list = _parser_of(tp)
        if default is not None and "(default:" not in text:
            text += f" (default: {','.join(map(str, default)) if is_list else default})"
        parser.add_argument(*(meta["flags"] or [_flag(f.name)]), dest=f.name, type=convert,
                            choices=None if is_list else meta["choices"], default=argparse.SUPPRESS,
                            metavar=meta["metavar"], help=text)


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that the command line set explicitly."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def config_from_args(cls: type, args: argparse.Namespace, base: Any | None = None, **overrides: Any) -> Any:
    """``base`` (default: ``cls()`` with ``overrides``) with every option the command line gave (argparse checks
    the choices of single values; the config's ``validate`` checks what lists hold)."""
    given = given_options(args, cls)
    hints = _hints(cls)
    for k, v in list(given.items()):
        if isinstance(v, list) and typing.get_origin(_unwrap(hints[k])[0]) is tuple:
            given[k] = tuple(v)
    start = base if base is not None else cls(**overrides)
    return dataclasses.replace(start, **given)
