"""Errors raised by stochgrad.

Every error is a :class:`StochgradError`; the ones caused by a bad value are also :class:`ValueError`, so
``except ValueError`` keeps working for code that does not know this library. Messages name the offending
argument, what it got and what it needs.
"""

from __future__ import annotations


class StochgradError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidArgumentError(StochgradError, ValueError):
    """An argument has a value the function cannot accept (wrong sign, NaN, outside its support...)."""


class UnsupportedError(StochgradError, ValueError):
    """The requested combination (family, parameter, estimator) has no valid estimator here."""


class BudgetError(StochgradError, ValueError):
    """The number of evaluations asked for is too small for the estimator."""


class EvaluationError(StochgradError, ValueError):
    """The function under expectation returned something unusable (wrong shape, NaN, infinity, no gradient)."""


class MissingExtraError(StochgradError, ImportError):
    """An optional extra (``rl``, ``ray``, ``rlhf``) that a command or class needs is not installed.

    Attributes:
      extra: the extra's name, as in ``pip install 'stochgrad[extra]'``.
    """

    def __init__(self, extra: str, message: str) -> None:
        super().__init__(message)
        self.extra = extra


class NonFiniteGradientError(StochgradError, ArithmeticError):
    """f's values were finite but the estimate computed from them is not (NaN or infinity): the message names
    the parameter and the components; no estimator returns a non-finite gradient without raising this."""
