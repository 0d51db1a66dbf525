"""Episode rollouts: one episode of a linear policy, and the return, length and state statistics it gives.

A rollout is a picklable :class:`Episode` (everything it needs, including its seed) run by :func:`run_episode`
in any process; the environment is reset with the episode's seed, so the result depends on the job alone and
one seed gives the same numbers on every evaluator. The seed of episode ``index`` of iteration ``iteration``
comes from :func:`episode_seed`, never from a worker's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stochgrad.rl.envs import RLEnvironmentError, cached_env
from stochgrad.rl.normalizer import StateStats
from stochgrad.rl.policy import LinearPolicy

#: Streams of episode seeds: training rollouts, evaluation of the mean policy, the variance experiment.
TRAIN, EVAL, VARIANCE = 0, 1, 2


def episode_seed(seed: int, iteration: int, index: int, stream: int = TRAIN) -> int:
    """A 32-bit seed for episode ``index`` of ``iteration`` in ``stream``, derived from the run's ``seed``."""
    return int(np.random.SeedSequence([seed, stream, iteration, index]).generate_state(1)[0])


def iteration_seeds(seed: int, iteration: int, n: int, stream: int = TRAIN, common: bool = False) -> list[int]:
    """The reset seeds of the ``n`` episodes of one iteration: one per episode, or with ``common=True`` one seed
    for all of them (common random numbers: every point of the estimate starts from the same state, so the
    differences its estimator takes carry the policy's effect and not the start's; across iterations the start
    still varies, so the estimate stays unbiased for the expected return)."""
    return [episode_seed(seed, iteration, 0 if common else i, stream) for i in range(n)]


@dataclass
class Episode:
    """One rollout to run.

    Attributes:
      env_id: Gymnasium id; env_kwargs: keyword arguments of ``gymnasium.make``.
      weights: W, ``[A·S]`` float64, row-major ``[A, S]``.
      mean, std: the frozen normaliser, ``[S]`` each.
      low, high: action bounds ``[A]``; actions: "clip" or "raw".
      seed: the reset seed.
      max_steps: the horizon (also the environment's time limit).
      shift: subtracted from every reward in ``shifted_return`` (ARS's survival-bonus shift).
      record_states: return the state statistics (for the normaliser).
    """

    env_id: str
    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seed: int
    max_steps: int
    shift: float = 0.0
    actions: str = "clip"
    record_states: bool = True
    env_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpisodeResult:
    """What one rollout gives.

    Attributes:
      ret: the return, Σ rewards (never shifted).
      shifted_return: Σ (reward − shift), what training maximises.
      length: steps taken.
      states: count, mean and squared deviations of the states seen (the reset state and every state the
        policy acted on), or None.
    """

    ret: float
    shifted_return: float
    length: int
    states: StateStats | None


def _check(x: Any, what: str, ep: Episode, step: int) -> None:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))[:5].tolist()
        raise RLEnvironmentError(
            f"environment {ep.env_id} returned a non-finite {what} (NaN or infinity) at step {step} of the episode "
            f"with seed {ep.seed}" + (f", in coordinate(s) {bad}" if arr.ndim else "") +
            f": {arr.reshape(-1)[:6].tolist()}")


def run_episode(ep: Episode) -> EpisodeResult:
    """Run one episode to termination or the horizon.

    Raises:
      RLEnvironmentError: the environment returned a NaN/infinite observation or reward (naming the
        environment, the step and the episode's seed).
    """
    env = cached_env(ep.env_id, ep.max_steps, **ep.env_kwargs)
    policy = LinearPolicy(ep.weights, ep.mean, ep.std, ep.low, ep.high, ep.actions)
    obs, _ = env.reset(seed=ep.seed)
    _check(obs, "observation", ep, 0)
    states = [np.asarray(obs, dtype=np.float64)] if ep.record_states else None
    total, shifted, t = 0.0, 0.0, 0
    while t < ep.max_steps:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        t += 1
        reward = float(reward)
        if not math.isfinite(reward):
            _check(reward, "reward", ep, t)
        _check(obs, "observation", ep, t)
        total += reward
        shifted += reward - ep.shift
        if terminated or truncated:
            break
        if states is not None:
            states.append(np.asarray(obs, dtype=np.float64))
    stats = StateStats.of(np.stack(states)) if states is not None else None
    return EpisodeResult(total, shifted, t, stats)
