"""The running observation normaliser of ARS V2: a mean and standard deviation of every state seen so far.

It is frozen inside one estimate (every rollout of an iteration normalises with the same mean and std, so f
stays one function of the policy parameters) and updated after it from the states of every rollout of the
iteration, merged in the order of the plan's points, so the result does not depend on which worker ran what.
Before any state is seen it is the identity (mean 0, std 1); a coordinate whose std is below 1e-7 (a constant
state coordinate) is mapped to 0, as in ARS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StateStats:
    """Count, mean ``[S]`` and sum of squared deviations ``[S]`` of a set of states (float64)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> StateStats:
        return cls(0, np.zeros(dim), np.zeros(dim))

    @classmethod
    def of(cls, states: np.ndarray) -> StateStats:
        """Statistics of ``states [T, S]``."""
        states = np.asarray(states, dtype=np.float64)
        if states.shape[0] == 0:
            return cls.empty(states.shape[1])
        mean = states.mean(0)
        return cls(int(states.shape[0]), mean, ((states - mean) ** 2).sum(0))

    def merge(self, other: StateStats) -> StateStats:
        """Chan et al.'s parallel combination (exact up to rounding, and deterministic in the order of merges)."""
        if other.count == 0:
            return StateStats(self.count, self.mean.copy(), self.m2.copy())
        if self.count == 0:
            return StateStats(other.count, other.mean.copy(), other.m2.copy())
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n)
        return StateStats(n, mean, m2)


class RunningNormalizer:
    """``normalise(s) = (s − mean) / std`` with the mean and std of every state folded in so far.

    Args:
      dim: S, the length of a state.
      enabled: False gives the identity forever (ARS V1).

    Example::

        norm = RunningNormalizer(11)
        mean, std = norm.frozen()              # what this iteration's rollouts use
        norm.update(StateStats.of(states))     # after the iteration
    """

    def __init__(self, dim: int, enabled: bool = True) -> None:
        self.dim, self.enabled = dim, enabled
        self.stats = StateStats.empty(dim)

    def frozen(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [S], std [S])`` to normalise with now; std is ``inf`` where it is below 1e-7 (→ 0)."""
        if not self.enabled or self.stats.count == 0:
            return np.zeros(self.dim), np.ones(self.dim)
        mean = self.stats.mean.copy()
        var = self.stats.m2 / (self.stats.count - 1) if self.stats.count > 1 else np.square(mean)
        std = np.sqrt(var)
        std[std < 1e-7] = np.inf
        return mean, std

    def update(self, stats: StateStats) -> None:
        """Fold in the states of one rollout (call in the order of the plan's points)."""
        if self.enabled:
            self.stats = self.stats.merge(stats)

    @property
    def count(self) -> int:
        """States seen so far."""
        return self.stats.count

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"count": torch.tensor(self.stats.count), "mean": torch.from_numpy(self.stats.mean.copy()),
                "m2": torch.from_numpy(self.stats.m2.copy())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = StateStats(int(state["count"]), state["mean"].numpy().astype(np.float64).copy(),
                                state["m2"].numpy().astype(np.float64).copy())
