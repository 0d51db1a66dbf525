"""What ``stochgrad optimize`` minimises: a lab test function by name, or the user's own ``module:callable``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from stochgrad.errors import InvalidArgumentError
from stochgrad.lab.functions import FUNCTIONS, get_function


@dataclass(frozen=True)
class Objective:
    """A function to minimise and what is known about it.

    Attributes:
      name: as given (``"rastrigin"`` or ``"mymodule:loss"``).
      f: batched ``[n, D] -> [n]``, or a function of one point ``[D] -> float`` when ``per_point``.
      per_point: whether ``f`` takes one point.
      domain: half-width of the usual search box (None for a user's function).
      minimum: the global minimum in this dimension, when known.
    """

    name: str
    f: Callable
    per_point: bool
    domain: float | None = None
    minimum: float | None = None


def resolve_objective(spec: str, dim: int, per_point: bool = False) -> Objective:
    """A lab function by name, or ``module:callable`` (``callable`` may be dotted: ``module:Class.method``; the
    working directory is searched too, as by ``python -m``).

    Raises:
      InvalidArgumentError: naming ``function``: an unknown name, a module that does not import, a missing or
        non-callable attribute.
    """
    if ":" not in spec:
        if spec not in FUNCTIONS:
            raise InvalidArgumentError(f"function: unknown name {spec!r}; choose one of {', '.join(FUNCTIONS)}, "
                                       "or give your own as module:callable")
        fn = get_function(spec)
        if per_point:
            raise InvalidArgumentError(f"per_point: {spec} is a batched lab function; per_point is for your own "
                                       "module:callable")
        return Objective(spec, fn, False, fn.domain, fn.minimum(dim))
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidArgumentError(f"function: {spec!r} is not of the form module:callable")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())              # as `python -m` does: a module in the working directory imports
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgumentError(f"function: cannot import module {module_name!r} of {spec!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidArgumentError(f"function: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidArgumentError(f"function: {spec!r} is a {type(obj).__name__}, not a callable")
    return Objective(spec, obj, per_point)
