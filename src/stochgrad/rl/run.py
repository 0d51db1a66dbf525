"""``stochgrad rl train`` and ``rl eval``: training through the one run abstraction, replays of its policies.

A run directory (:mod:`stochgrad.runs.run`) holds ``config.json`` (the settings, and under ``resolved`` the task
defaults they resolved to), ``metrics.jsonl`` (one row per iteration of any seed, naming its ``seed``),
``checkpoint.pt`` (every seed's state; written atomically every ``checkpoint_every`` iterations and at the end),
``plots/reward_curve.png`` (mean and spread over seeds) and ``summary.md``. ``resume=True`` continues from the
checkpoint (the metrics are cut back to it) and gives exactly what an uninterrupted run gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stochgrad.errors import InvalidArgumentError
from stochgrad.evaluators import make_evaluator
from stochgrad.rl.plots import reward_curve
from stochgrad.rl.rollout import Episode, episode_seed, run_episode
from stochgrad.rl.tasks import preset
from stochgrad.rl.trainer import TrainConfig, Trainer
from stochgrad.runs import Command, config_from_dict, read_run_config, run
from stochgrad.runs.files import atomic_write_text, load_checkpoint

#: Stream of episode seeds for ``rl eval`` (replays never share seeds with training or its evaluations).
REPLAY = 3


@dataclass
class SeedResult:
    """The outcome of one seed: its final metrics row, its metric rows, and its final mean policy ``[A, S]``."""

    seed: int
    rows: list[dict]
    weights: np.ndarray
    final_eval: float | None


class TrainExperiment:
    """``rl train`` as an :class:`~stochgrad.runs.Experiment`: the seeds one after another, a step being one
    iteration of the current seed's :class:`Trainer`; every metrics row names its ``seed``.

    The checkpoint holds the state of every seed started so far (a finished seed's state is its final policy and
    normaliser, which ``rl eval`` replays), and which seed runs now.
    """

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, evaluator: Any = None) -> None:
        self.config = config
        self.own = evaluator is None
        self.evaluator = evaluator if evaluator is not None else make_evaluator(config.evaluator, config.workers,
                                                                                 config.ray_address)
        try:
            self.trainers = [Trainer(config, config.seed, self.evaluator)]   # a bad setting fails here
        except BaseException:
            self.close()
            raise
        self.unit = "episode" if config.episodes is not None else "step"

    def _trainer(self, index: int) -> Trainer:
        while len(self.trainers) <= index:
            self.trainers.append(Trainer(self.config, self.config.seed + len(self.trainers), self.evaluator))
        return self.trainers[index]

    def _current(self) -> int | None:
        """The first seed (index) whose budget is not spent, or None."""
        for i in range(self.config.seeds):
            if not self._trainer(i).done():
                return i
        return None

    def resolved(self) -> dict:
        return {"resolved": self.trainers[0].settings}

    def stop_reason(self) -> str | None:
        return "budget" if self._current() is None else None

    def step(self) -> dict[str, Any]:
        tr = self._trainer(self._current())
        return {"seed": tr.seed, **tr.step()}

    def progress(self) -> tuple[int, int]:
        c = self.config
        cap = c.episodes if c.episodes is not None else c.steps
        used = sum(min(t.episodes if c.episodes is not None else t.steps, cap) for t in self.trainers)
        return used, cap * c.seeds

    def postfix(self, row: dict) -> dict:
        ev = self._trainer(self.config.seeds - 1 if self._current() is None else self._current()).last_eval
        return {"seed": row["seed"], "ret": f"{row['mean_return']:.0f}", "eval": "-" if ev is None else f"{ev:.0f}"}

    def state_dict(self) -> dict[str, Any]:
        return {"seeds": [t.state_dict() for t in self.trainers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, s in enumerate(state["seeds"]):
            self._trainer(i).load_state_dict(s)

    def results(self, rows: list[dict]) -> list[SeedResult]:
        out = []
        for t in self.trainers:
            mine = [r for r in rows if r["seed"] == t.seed]
            evals = [r["eval_return"] for r in mine if r.get("eval_return") is not None]
            out.append(SeedResult(t.seed, mine, t.weights, evals[-1] if evals else None))
        return out

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        _write_outputs(self.config, run_dir, self.results(rows))

    def close(self) -> None:
        if self.own and getattr(self, "evaluator", None) is not None:
            self.evaluator.close()
            self.evaluator = None


RL_TRAIN = Command("rl train", TrainConfig, TrainExperiment)


def run_train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
              evaluator: Any = None, callback: Callable[[Trainer, dict], bool | None] | None = None,
              ) -> tuple[list[SeedResult], Path]:
    """Train (or resume) every seed of ``config`` into run directory ``out``.

    Args:
      config: the settings (on ``resume`` they must equal the saved ones but for the budget and where the
        episodes run).
      out: the run directory.
      resume: continue from the checkpoint in ``out``.
      progress: show a progress bar over the episodes (or steps) of all seeds.
      evaluator: where the rollouts run (default: made from the config; closed at the end if made here).
      callback: ``callback(trainer, row)`` after each iteration's row was written; returning True stops.
    Returns:
      one :class:`SeedResult` per seed, and the run directory.
    """
    command = RL_TRAIN if evaluator is None else Command(
        RL_TRAIN.name, TrainConfig, lambda cfg, run_dir: TrainExperiment(cfg, run_dir, evaluator))
    cb = None if callback is None else (
        lambda exp, row: callback(next(t for t in exp.trainers if t.seed == row["seed"]), row))
    res = run(command, config, out, resume=resume, progress=progress, callback=cb)
    return res.experiment.results(res.rows), res.run_dir


def first_reaching(rows: list[dict], threshold: float) -> int | None:
    """Training episodes at the first evaluation whose mean return reached ``threshold`` (None if none did)."""
    for r in rows:
        if r.get("eval_return") is not None and r["eval_return"] >= threshold:
            return int(r["episodes"])
    return None


def _write_outputs(config: TrainConfig, run_dir: Path, results: list[SeedResult]) -> None:
    p = preset(config.env)
    title = f"{config.env}, {config.estimator}"
    reward_curve({config.estimator: [r.rows for r in results]}, run_dir / "plots" / "reward_curve.png", title,
                 p.threshold if p else None)
    lines = [f"# stochgrad rl train: {title}", "",
             "| seed | iterations | episodes | env steps | final eval return | max eval return |"
             + (" episodes to threshold |" if p else ""),
             "|---:|---:|---:|---:|---:|---:|" + ("---:|" if p else "")]
    for r in results:
        last = r.rows[-1] if r.rows else {"iteration": 0, "episodes": 0, "steps": 0}
        evals = [x["eval_return"] for x in r.rows if x.get("eval_return") is not None]
        line = (f"| {r.seed} | {last['iteration']} | {last['episodes']} | {last['steps']} | "
                f"{'-' if r.final_eval is None else f'{r.final_eval:.1f}'} | "
                f"{'-' if not evals else f'{max(evals):.1f}'} |")
        if p:
            hit = first_reaching(r.rows, p.threshold)
            line += f" {'not reached' if hit is None else hit} |"
        lines.append(line)
    lines += ["", "Plot: `plots/reward_curve.png`; metrics (every seed): `metrics.jsonl`; checkpoint: `checkpoint.pt`.",
              ""]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines))


def run_eval(run: str | Path, episodes: int = 10, seed: int = 0, evaluator: Any = None,
             ) -> dict[int, tuple[float, float]]:
    """Replay the saved mean policy of every seed of run ``run`` for ``episodes`` episodes (unshifted returns).

    Returns:
      seed → (mean return, std of the returns).
    Raises:
      InvalidArgumentError: ``run`` holds no finished checkpoint (naming the directory).
    """
    run_dir = Path(run)
    saved = read_run_config(run_dir)
    if saved is None or saved["command"] != RL_TRAIN.name:
        raise InvalidArgumentError(f"run: {str(run_dir)!r} is not a run directory of stochgrad rl train "
                                   f"({'no config.json' if saved is None else 'a ' + repr(saved['command']) + ' run'})")
    config = config_from_dict(TrainConfig, saved["config"])
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.exists():
        raise InvalidArgumentError(f"run: {str(run_dir)!r} holds no checkpoint yet (checkpoint.pt)")
    if episodes < 1:
        raise InvalidArgumentError(f"episodes: need at least 1; got {episodes}")
    own = evaluator is None
    evaluator = evaluator if evaluator is not None else make_evaluator(config.evaluator, config.workers,
                                                                        config.ray_address)
    out = {}
    try:
        from stochgrad.rl.envs import env_spec
        from stochgrad.rl.normalizer import RunningNormalizer

        spec = env_spec(config.env, config.max_episode_steps, **config.env_kwargs)
        for state in load_checkpoint(ckpt_path)["experiment"]["seeds"]:
            norm = RunningNormalizer(spec.obs_dim, config.normalize)
            norm.load_state_dict(state["normalizer"])
            mean, std = norm.frozen()
            w = state["weights"].numpy().reshape(-1)
            run_seed = int(state["seed"])
            eps = [Episode(config.env, w, mean, std, np.array(spec.low), np.array(spec.high),
                           episode_seed(seed, run_seed, i, REPLAY), spec.max_episode_steps, 0.0, config.actions,
                           False, dict(config.env_kwargs)) for i in range(episodes)]
            rets = np.array([r.ret for r in evaluator.map(run_episode, eps)])
            out[run_seed] = (float(rets.mean()), float(rets.std()))
    finally:
        if own:
            evaluator.close()
    return out
