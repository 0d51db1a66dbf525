"""The deterministic linear policy ``a = W · normalise(s)`` of ARS: W is ``[A, S]``, no bias.

Actions are clipped to the action space (``actions="clip"``), or passed as they are (``actions="raw"``, what
ARS did: MuJoCo clamps the control to its range, so the motion is the same, but the control cost of the v5
tasks is then charged on the unclipped action).
"""

from __future__ import annotations

import numpy as np

from stochgrad.errors import InvalidArgumentError

ACTIONS = ("clip", "raw")


class LinearPolicy:
    """``a = clip(W · (s − mean) / std)``.

    Args:
      weights: W, ``[A, S]`` (or flat ``[A·S]``, row-major).
      mean, std: the frozen normaliser, each ``[S]``.
      low, high: the action bounds, each ``[A]``.
      actions: "clip" or "raw".
    """

    def __init__(self, weights: np.ndarray, mean: np.ndarray, std: np.ndarray, low: np.ndarray,
                 high: np.ndarray, actions: str = "clip") -> None:
        if actions not in ACTIONS:
            raise InvalidArgumentError(f"actions: got {actions!r}; choose one of {list(ACTIONS)}")
        mean = np.asarray(mean, dtype=np.float64)
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.W = np.asarray(weights, dtype=np.float64).reshape(low.shape[0], mean.shape[0])
        self.mean, self.inv_std = mean, 1.0 / np.asarray(std, dtype=np.float64)
        self.low, self.high, self.clip = low, high, actions == "clip"

    def __call__(self, state: np.ndarray) -> np.ndarray:
        """The action ``[A]`` for a state ``[S]``."""
        a = self.W @ ((np.asarray(state, dtype=np.float64) - self.mean) * self.inv_std)
        return np.clip(a, self.low, self.high) if self.clip else a
