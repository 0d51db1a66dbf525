"""Gymnasium environments: MuJoCo v5 tasks (from the ``mujoco`` package) and classic control for fast tests.

Environments are made by Gymnasium id (``"Hopper-v5"``, ``"Pendulum-v1"``, or ``"module:Id-v0"`` to import
the module that registers a custom one) with the environment checker off. A worker process keeps one
environment per (id, settings) and resets it with the episode's seed, so nothing a worker remembers changes a
rollout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from stochgrad.errors import InvalidArgumentError, StochgradError


class RLEnvironmentError(StochgradError):
    """An environment returned NaN or infinite observations or rewards (the message names it and the step)."""


@dataclass(frozen=True)
class EnvSpec:
    """What the policy needs to know about an environment.

    Attributes:
      env_id: the Gymnasium id.
      obs_dim: S, the length of an observation.
      act_dim: A, the length of an action.
      low, high: the action bounds, each ``[A]`` (as lists).
      max_episode_steps: the episode horizon (Gymnasium's time limit, or the one asked for).
    """

    env_id: str
    obs_dim: int
    act_dim: int
    low: tuple[float, ...]
    high: tuple[float, ...]
    max_episode_steps: int

    @property
    def n_params(self) -> int:
        """A·S, the parameters of a linear policy."""
        return self.obs_dim * self.act_dim


_CACHE: dict[str, Any] = {}


def _key(env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any]) -> str:
    return json.dumps([env_id, max_episode_steps, kwargs], sort_keys=True, default=str)


def make_env(env_id: str, max_episode_steps: int | None = None, **kwargs: Any):
    """A new Gymnasium environment (checker off).

    Raises:
      InvalidArgumentError: naming ``env`` if Gymnasium does not know the id (or its module cannot be imported).
    """
    import gymnasium as gym

    try:
        return gym.make(env_id, disable_env_checker=True, max_episode_steps=max_episode_steps, **kwargs)
    except (gym.error.Error, ModuleNotFoundError, ImportError, AttributeError) as exc:
        raise InvalidArgumentError(f"env: cannot make Gymnasium environment {env_id!r}: {exc}") from None


def cached_env(env_id: str, max_episode_steps: int | None = None, **kwargs: Any):
    """This process's environment for (id, horizon, settings), made on first use."""
    key = _key(env_id, max_episode_steps, kwargs)
    env = _CACHE.get(key)
    if env is None:
        env = _CACHE[key] = make_env(env_id, max_episode_steps, **kwargs)
    return env


def env_spec(env_id: str, max_episode_steps: int | None = None, **kwargs: Any) -> EnvSpec:
    """The :class:`EnvSpec` of an environment with a flat Box observation and a Box action space.

    Raises:
      InvalidArgumentError: unknown id, or spaces a linear policy cannot drive (naming what they are).
    """
    import gymnasium as gym

    env = cached_env(env_id, max_episode_steps, **kwargs)
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise InvalidArgumentError(f"env: {env_id} needs a flat Box observation space for a linear policy; "
                                   f"got {obs}")
    if not isinstance(act, gym.spaces.Box) or len(act.shape) != 1:
        raise InvalidArgumentError(f"env: {env_id} needs a continuous (Box) action space for a linear policy; "
                                   f"got {act}")
    horizon = max_episode_steps or (env.spec.max_episode_steps if env.spec is not None else None)
    if horizon is None:
        raise InvalidArgumentError(f"env: {env_id} has no time limit; pass max_episode_steps")
    return EnvSpec(env_id, int(obs.shape[0]), int(act.shape[0]), tuple(map(float, np.asarray(act.low))),
                   tuple(map(float, np.asarray(act.high))), int(horizon))
