"""``stochgrad rl train`` and ``rl eval``: run directories, checkpoints, resume, reward curves.

A run directory holds ``config.json`` (the settings and the task defaults they resolved to), one folder per
seed ``seed_<s>/`` with ``metrics.jsonl`` (one line per iteration) and ``checkpoint.pt`` (written atomically
every ``checkpoint_every`` iterations and at the end), ``reward_curve.png`` (mean and spread over seeds) and
``summary.md``. ``resume=True`` continues every seed from its checkpoint (the metrics are cut back to it) and
gives exactly what an uninterrupted run gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stochgrad.errors import InvalidArgumentError
from stochgrad.rl.parallel import make_evaluator
from stochgrad.rl.plots import reward_curve
from stochgrad.rl.rollout import Episode, episode_seed, run_episode
from stochgrad.rl.tasks import preset
from stochgrad.rl.trainer import TrainConfig, Trainer
from stochgrad.runs.files import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    prepare_run_dir,
    read_jsonl,
    save_checkpoint,
    truncate_jsonl,
)

#: Stream of episode seeds for ``rl eval`` (replays never share seeds with training or its evaluations).
REPLAY = 3


@dataclass
class SeedResult:
    """The outcome of one seed: its final metrics row, its metric rows, and its final mean policy ``[A, S]``."""

    seed: int
    rows: list[dict]
    weights: np.ndarray
    final_eval: float | None


def _budget_total(config: TrainConfig) -> tuple[int, str]:
    if config.episodes is not None:
        return config.episodes * config.seeds, "episodes"
    return int(config.steps) * config.seeds, "steps"


def run_train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
              evaluator: Any = None, callback: Callable[[Trainer, dict], None] | None = None,
              ) -> tuple[list[SeedResult], Path]:
    """Train (or resume) every seed of ``config`` into run directory ``out``.

    Args:
      config: the settings (on ``resume`` the saved ones are used; the budget may be raised).
      out: the run directory.
      resume: continue from the checkpoints in ``out``.
      progress: show a progress bar over the episodes (or steps) of all seeds.
      evaluator: where the rollouts run (default: made from the config; closed at the end if made here).
      callback: ``callback(trainer, row)`` after each iteration's row was written (a test uses it to
        interrupt a run).
    Returns:
      one :class:`SeedResult` per seed, and the run directory.
    """
    run_dir = prepare_run_dir(out)
    cfg_path = run_dir / "config.json"
    if resume:
        if not cfg_path.exists():
            raise InvalidArgumentError(f"resume: {str(run_dir)!r} holds no run to resume (no config.json)")
        saved = json.loads(cfg_path.read_text())["config"]
        episodes, steps = config.episodes, config.steps
        evaluator_kind, workers, address = config.evaluator, config.workers, config.ray_address
        config = TrainConfig(**saved)
        if episodes is not None and config.episodes is not None:
            config.episodes = max(episodes, config.episodes)
        if steps is not None and config.steps is not None:
            config.steps = max(steps, config.steps)
        config.evaluator, config.workers, config.ray_address = evaluator_kind, workers, address
    else:
        config.validate()
        if cfg_path.exists() or any(run_dir.glob("seed_*/checkpoint.pt")):
            raise InvalidArgumentError(f"out: {str(run_dir)!r} already holds a run; pass --resume to continue it "
                                       "or choose another --out")
    config.validate()
    own = evaluator is None
    evaluator = evaluator if evaluator is not None else make_evaluator(config.evaluator, config.workers,
                                                                        config.ray_address)
    results: list[SeedResult] = []
    try:
        first = Trainer(config, config.seed, evaluator)
        atomic_write_json(cfg_path, {"config": config.to_dict(), "resolved": first.settings})
        total, unit = _budget_total(config)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit=unit[:-1], desc=f"{config.env} {config.estimator}", dynamic_ncols=True)
        for s in range(config.seeds):
            seed = config.seed + s
            trainer = first if s == 0 else Trainer(config, seed, evaluator)
            results.append(_train_seed(trainer, run_dir / f"seed_{seed}", resume, bar, unit, callback))
        if bar is not None:
            bar.close()
    finally:
        if own:
            evaluator.close()
    _write_outputs(config, run_dir, results)
    return results, run_dir


def _train_seed(trainer: Trainer, seed_dir: Path, resume: bool, bar: Any, unit: str,
                callback: Callable | None) -> SeedResult:
    seed_dir.mkdir(parents=True, exist_ok=True)
    metrics, ckpt = seed_dir / "metrics.jsonl", seed_dir / "checkpoint.pt"
    if resume and ckpt.exists():
        trainer.load_state_dict(load_checkpoint(ckpt))
        truncate_jsonl(metrics, trainer.iteration)
    else:
        truncate_jsonl(metrics, 0)
    rows = read_jsonl(metrics)
    done_before = trainer.episodes if unit == "episodes" else trainer.steps
    if bar is not None:
        bar.update(min(done_before, trainer.config.episodes if unit == "episodes" else trainer.config.steps))
    every = trainer.config.checkpoint_every
    while not trainer.done():
        row = trainer.step()
        append_jsonl(metrics, row)
        rows.append(row)
        if trainer.iteration % every == 0 or trainer.done():
            save_checkpoint(ckpt, trainer.state_dict())
        if bar is not None:
            now = trainer.episodes if unit == "episodes" else trainer.steps
            cap = trainer.config.episodes if unit == "episodes" else trainer.config.steps
            bar.update(min(now, cap) - min(done_before, cap))
            done_before = now
            last_eval = trainer.last_eval
            bar.set_postfix(seed=trainer.seed, ret=f"{row['mean_return']:.0f}",
                            eval="-" if last_eval is None else f"{last_eval:.0f}")
        if callback is not None:
            callback(trainer, row)
    if not ckpt.exists():
        save_checkpoint(ckpt, trainer.state_dict())
    evals = [r["eval_return"] for r in rows if r.get("eval_return") is not None]
    return SeedResult(trainer.seed, rows, trainer.weights, evals[-1] if evals else None)


def first_reaching(rows: list[dict], threshold: float) -> int | None:
    """Training episodes at the first evaluation whose mean return reached ``threshold`` (None if none did)."""
    for r in rows:
        if r.get("eval_return") is not None and r["eval_return"] >= threshold:
            return int(r["episodes"])
    return None


def _write_outputs(config: TrainConfig, run_dir: Path, results: list[SeedResult]) -> None:
    p = preset(config.env)
    title = f"{config.env}, {config.estimator}"
    reward_curve({config.estimator: [r.rows for r in results]}, run_dir / "reward_curve.png", title,
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
    lines += ["", "Plot: `reward_curve.png`; per seed: `seed_<s>/metrics.jsonl`, `seed_<s>/checkpoint.pt`.", ""]
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
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise InvalidArgumentError(f"run: {str(run_dir)!r} is not a run directory of stochgrad rl train "
                                   "(no config.json)")
    saved = json.loads(cfg_path.read_text())
    config = TrainConfig(**saved["config"])
    ckpts = sorted(run_dir.glob("seed_*/checkpoint.pt"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not ckpts:
        raise InvalidArgumentError(f"run: {str(run_dir)!r} holds no checkpoint yet (seed_*/checkpoint.pt)")
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
        for ckpt in ckpts:
            state = load_checkpoint(ckpt)
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
