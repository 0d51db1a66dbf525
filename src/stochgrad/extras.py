"""Optional extras: which modules each one brings, and one named error when a command needs a missing one.

The core install (``pip install stochgrad``) has the estimators, the lab and the optimiser. ``rl``, ``ray`` and
``rlhf`` add the modules below; code that needs one calls :func:`require` before any work, so a missing extra
is one line naming it and the pip command, never a traceback from deep inside a run.
"""

from __future__ import annotations

import importlib.util

from stochgrad.errors import MissingExtraError

#: The modules each extra of pyproject.toml installs (by import name).
EXTRAS: dict[str, tuple[str, ...]] = {
    "rl": ("gymnasium", "mujoco"),
    "ray": ("ray",),
    "rlhf": ("transformers", "tokenizers", "vaderSentiment", "safetensors"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (found without importing them)."""
    if extra not in EXTRAS:
        raise KeyError(f"extra: unknown {extra!r}; known: {', '.join(EXTRAS)}")
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``."""
    return f"pip install 'stochgrad[{extra}]'"


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` when a module of ``extra`` is missing.

    Args:
      extra: a key of :data:`EXTRAS`.
      what: what needs it, for the message (e.g. ``"stochgrad rl train"``).
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(extra, f"{what} needs the '{extra}' extra (missing module {missing[0]!r}); "
                                       f"install it with: {install_hint(extra)}")


def extra_providing(module: str) -> str | None:
    """The extra whose modules include the top-level package of ``module`` (``"ray.util"`` -> ``"ray"``)."""
    top = module.split(".")[0]
    return next((name for name, mods in EXTRAS.items() if top in mods), None)


def needs_extras(parser, *extras: str) -> None:
    """Declare that the command of ``parser`` (an ``argparse`` parser) needs ``extras``; ``stochgrad``'s main
    checks them with :func:`require` before the command runs."""
    for extra in extras:
        if extra not in EXTRAS:
            raise KeyError(f"extra: unknown {extra!r}; known: {', '.join(EXTRAS)}")
    parser.set_defaults(extras=extras, prog=parser.prog)
