"""Environments for the RL tests: Pendulum-v1 that returns NaN, or kills its worker process, on one episode.

Imported by name (``gymnasium.make("rl_test_envs:FaultyPendulum-v0", ...)``), also inside worker processes,
which see this directory on their path.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np


class FaultyPendulum(gym.Wrapper):
    """Pendulum-v1; in the episode reset with ``nan_seed`` the observation (or reward) at step ``nan_step`` is
    NaN; in the episode reset with ``die_seed`` the process exits at ``nan_step`` unless ``marker`` exists
    (it is created first, so the worker dies once)."""

    def __init__(self, nan_seed: int | None = None, nan_step: int = 5, what: str = "observation",
                 die_seed: int | None = None, marker: str | None = None) -> None:
        super().__init__(gym.make("Pendulum-v1", disable_env_checker=True).unwrapped)
        self.nan_seed, self.nan_step, self.what = nan_seed, nan_step, what
        self.die_seed, self.marker = die_seed, marker
        self._seed, self._t = None, 0

    def reset(self, *, seed=None, options=None):
        self._seed, self._t = seed, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, rew, term, trunc, info = self.env.step(action)
        self._t += 1
        if self._seed == self.die_seed and self._t == self.nan_step and self.marker and not Path(self.marker).exists():
            Path(self.marker).write_text("died")
            os._exit(1)
        if self._seed == self.nan_seed and self._t == self.nan_step:
            if self.what == "observation":
                obs = np.array(obs, dtype=np.float64)
                obs[1] = np.nan
            else:
                rew = float("nan")
        return obs, rew, term, trunc, info


gym.register("FaultyPendulum-v0", entry_point=FaultyPendulum, max_episode_steps=50)
