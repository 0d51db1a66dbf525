"""Task presets: ARS's thresholds and published V2-t hyper-parameters, per MuJoCo task.

Mania, Guy, Recht (2018), "Simple random search provides a competitive approach to reinforcement learning",
Table 1 (reward thresholds and the median episodes ARS V2-t needed over 3 seeds) and Table 9 (the V2-t
hyper-parameters behind them). They were measured on gym's v1 tasks with MuJoCo 1.31; the v5 tasks used here
differ (the healthy bonus is paid only while healthy, Walker2d's friction, observation sizes), so the published
medians are context only: our benchmark runs ARS V2-t itself, through :class:`~stochgrad.rl.trainer.Trainer`,
on the same v5 tasks as every other estimator.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskPreset:
    """One task's ARS settings.

    Attributes:
      env_id: Gymnasium id.
      threshold: the reward threshold ARS uses (Table 1).
      step_size: α, the plain step size of V2-t.
      noise: ν, the standard deviation of the perturbations.
      directions: N, the directions per iteration (2N episodes).
      top: b, the directions used in the step.
      shift: subtracted from every step's reward during training (removes the survival bonus on Hopper and
        Walker2d; ARS's ``--shift 1``). Evaluation returns are never shifted.
      published_median_episodes: the median ARS V2-t reported on the v1 task (context only).
    """

    env_id: str
    threshold: float
    step_size: float
    noise: float
    directions: int
    top: int
    shift: float
    published_median_episodes: int


TASKS: dict[str, TaskPreset] = {
    "Swimmer-v5": TaskPreset("Swimmer-v5", 325.0, 0.02, 0.01, 1, 1, 0.0, 427),
    "Hopper-v5": TaskPreset("Hopper-v5", 3120.0, 0.01, 0.025, 8, 4, 1.0, 1973),
    "HalfCheetah-v5": TaskPreset("HalfCheetah-v5", 3430.0, 0.02, 0.03, 32, 4, 0.0, 1707),
    "Walker2d-v5": TaskPreset("Walker2d-v5", 4390.0, 0.03, 0.025, 40, 30, 1.0, 24000),
}


def preset(env_id: str) -> TaskPreset | None:
    """The preset of ``env_id`` (matching any version suffix of the four tasks), or None."""
    if env_id in TASKS:
        return TASKS[env_id]
    base = env_id.split(":")[-1].rsplit("-v", 1)[0]
    for key, value in TASKS.items():
        if key.rsplit("-v", 1)[0] == base:
            return value
    return None
