"""The trainer: parameter-space search for a linear policy with any estimator of the library.

The search distribution is N(W, σ²I) over the flat policy weights W (``[A·S]``); f(W) is the return of one
episode of the policy ``a = W · normalise(s)``, with the normaliser frozen for the whole iteration. Each
iteration:

1. the estimator plans its points (``B`` policies: antithetic pairs, MVD pairs, …);
2. an evaluator runs one episode per point (seeds from (seed, iteration, point index));
3. the returns (shifted by ``shift`` per step) are divided by the standard deviation of those the estimate uses
   (``reward_scaling``; the plan's ``used``: all of them, or ARS's 2b, ARS V2's σ_R) and handed to the estimator;
4. the optimiser steps on ``2σ·ĝ``: for antithetic pairs that is the mean of ``(f⁺ − f⁻)·δ``, so a plain step
   size (``optimizer="sgd"``) means what ARS's α means;
5. the normaliser folds in the states of every rollout, in point order.

It is :class:`~stochgrad.optim.SearchGradient` (ask/tell, any torch optimiser, checkpoints with the generator
state) with the rollouts, the normaliser and the bookkeeping of episodes and environment steps around it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from stochgrad.distributions.normal import Normal
from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.base import Estimator
from stochgrad.estimators.registry import estimator_names, get_spec, make_estimator, minimum_budget
from stochgrad.optim.search import OPTIMIZERS, SearchGradient
from stochgrad.optim.shaping import centered_ranks
from stochgrad.rl.envs import EnvSpec, env_spec
from stochgrad.rl.normalizer import RunningNormalizer
from stochgrad.evaluators import EVALUATORS
from stochgrad.rl.policy import ACTIONS
from stochgrad.rl.rollout import EVAL, TRAIN, Episode, EpisodeResult, iteration_seeds, run_episode
from stochgrad.rl.tasks import preset
from stochgrad.runs.config import option

SCALINGS = ("std", "none", "centered-ranks")
DIRECTIONS = ("orthogonal", "independent")


def trainer_estimators() -> list[str]:
    """Names the trainer accepts: every registered estimator that works on a black box."""
    return [n for n in estimator_names() if n != "pathwise"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as config.json). ``None`` means the task's default.

    Attributes:
      env: Gymnasium id (MuJoCo v5 tasks, classic control, or ``module:Id``).
      estimator: a registered black-box estimator ("ars": ARS V2-t's top-b directions, the default;
        "sf-antithetic", "mvd", "ccmvd", "auto", …); the estimator must use exactly ``episodes_per_iter``
        episodes.
      episodes: budget of training episodes per seed (evaluation episodes are not counted); never exceeded, so a
        budget that is not a multiple of ``episodes_per_iter`` leaves the remainder unused.
      steps: budget of training environment steps per seed (either or both; the first reached stops).
      seeds: how many seeds (``seed``, ``seed+1``, …) to run one after another.
      seed: the first seed.
      episodes_per_iter: B, episodes per gradient estimate (default: ARS's 2N for the task, at least the
        estimator's minimum and ``min_episodes_per_iter``; 8 for tasks without a preset).
      sigma: σ of the search distribution (default: ARS's ν for the task, else 0.05).
      lr: the step size (default: ARS's α for the task, else 0.02); the optimiser receives ``2σ·ĝ``.
      optimizer: "sgd" (a plain step, as ARS) or "adam".
      top: b, the pairs kept by an estimator with top-b selection (ARS; default: the task's preset, else N);
        ignored by the others.
      directions: "orthogonal" draws the directions of an iteration orthogonal to each other (each still
        N(0, I)), "independent" draws them independently (ARS's own way); for the estimators that offer the
        choice (ARS), an error for the others. Default: orthogonal where offered.
      common_seeds: every training episode of an iteration starts from the same reset seed (common random
        numbers, see :func:`~stochgrad.rl.rollout.iteration_seeds`); evaluations keep one seed per episode.
      min_episodes_per_iter: the default ``episodes_per_iter`` is at least this (6 = three antithetic pairs, so
        the return spread that scales each step comes from more than one comparison); 1 keeps ARS's 2N.
      reward_scaling: "std" (divide by the std of the returns used, ARS V2), "centered-ranks" or "none".
      shift: subtracted from every training reward (default: the task's, 1 on Hopper and Walker2d, else 0).
      actions: "clip" to the action space, or "raw" (the simulator clamps, ARS's handling).
      normalize: use the running observation normaliser (ARS V2); False is ARS V1.
      max_episode_steps: horizon (default: the environment's, 1000 for the MuJoCo tasks).
      eval_every: iterations between evaluations of the mean policy (and at the end).
      eval_episodes: episodes per evaluation (not counted in the budget).
      checkpoint_every: iterations between checkpoints (and at the end).
      evaluator: "process" (default), "ray" or "serial"; workers: processes / local Ray CPUs;
      ray_address: "auto" joins a running Ray cluster.
    """

    env: str = option("Hopper-v5", "Gymnasium environment id")
    estimator: str = option("ars", "gradient estimator ('ars': top-b directions, ARS V2-t's device)")
    episodes: int | None = option(20000, "training episodes per seed (default: 20000 unless --steps is given)",
                                  resumable=True)
    steps: int | None = option(None, "training environment steps per seed", resumable=True)
    seeds: int = option(1, "number of seeds, run one after another")
    seed: int = option(0, "first seed")
    episodes_per_iter: int | None = option(None, "episodes per gradient estimate (default: ARS's 2N for the task, "
                                                 "at least the estimator's minimum)")
    sigma: float | None = option(None, "search std (default: ARS's nu for the task)")
    lr: float | None = option(None, "step size (default: ARS's alpha for the task)")
    optimizer: str = option("sgd", "sgd = a plain step as ARS, or adam", choices=tuple(OPTIMIZERS))
    top: int | None = option(None, "ARS: directions used per step, b (default: the task's)")
    directions: str | None = option(None, "ARS: directions of an iteration orthogonal to each other or "
                                          "independent (default: orthogonal)", choices=DIRECTIONS)
    min_episodes_per_iter: int = option(6, "the default episodes per iteration is at least this (1: ARS's 2N)")
    common_seeds: bool = option(False, "start every training episode of an iteration from the same reset seed")
    reward_scaling: str = option("std", "divide returns by their std (ARS V2), centred ranks, or none",
                                 choices=SCALINGS)
    shift: float | None = option(None, "subtracted from each training reward (default: 1 on Hopper/Walker2d, "
                                       "else 0)")
    actions: str = option("clip", "clip actions to the action space, or pass them raw (the simulator clamps)",
                          choices=ACTIONS)
    normalize: bool = option(True, "no observation normaliser (ARS V1)", flags=("--no-normalize",))
    max_episode_steps: int | None = option(None, "episode horizon (default: the env's)")
    eval_every: int = option(10, "iterations between evaluations")
    eval_episodes: int = option(5, "episodes per evaluation")
    checkpoint_every: int = option(10, "iterations between checkpoints")
    evaluator: str = option("process", "where rollouts run: local processes, ray, or this process",
                            choices=EVALUATORS, resumable=True)
    workers: int | None = option(None, "worker processes / local Ray CPUs (default: all)", resumable=True)
    ray_address: str | None = option(None, "join a Ray cluster ('auto' = the running one); implies --evaluator ray",
                                     resumable=True)
    env_kwargs: dict[str, Any] = option({}, "keyword arguments of the environment", cli=False)

    #: What a run saved before these settings existed did (so that it resumes as it ran): ARS's independent
    #: directions and ARS's 2N episodes per iteration.
    ABSENT_MEANS: ClassVar[dict[str, Any]] = {"directions": "independent", "min_episodes_per_iter": 1}

    def validate(self) -> None:
        """Check every setting; errors name the argument, the value and what it needs."""
        names = trainer_estimators()
        if self.estimator not in names:
            if self.estimator == "pathwise":
                raise InvalidArgumentError("estimator: pathwise needs a differentiable f; an episode's return is a "
                                           f"black box. Choose one of {', '.join(names)}")
            get_spec(self.estimator)
        if self.episodes is None and self.steps is None:
            raise InvalidArgumentError("episodes/steps: give a budget of episodes or environment steps")
        for name in ("episodes", "steps", "seeds", "eval_every", "eval_episodes", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise InvalidArgumentError(f"{name}: need a positive integer; got {v!r}")
        for name in ("episodes_per_iter", "max_episode_steps", "top", "workers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise InvalidArgumentError(f"{name}: need a positive integer; got {v!r}")
        for name in ("sigma", "lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InvalidArgumentError(f"{name}: need a positive finite number; got {v!r}")
        if self.shift is not None and not math.isfinite(self.shift):
            raise InvalidArgumentError(f"shift: need a finite number; got {self.shift!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(f"optimizer: got {self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if self.reward_scaling not in SCALINGS:
            raise InvalidArgumentError(f"reward_scaling: got {self.reward_scaling!r}; choose one of {list(SCALINGS)}")
        if self.actions not in ACTIONS:
            raise InvalidArgumentError(f"actions: got {self.actions!r}; choose one of {list(ACTIONS)}")
        if self.directions is not None:
            if self.directions not in DIRECTIONS:
                raise InvalidArgumentError(f"directions: got {self.directions!r}; choose one of {list(DIRECTIONS)}")
            if "orthogonal" not in get_spec(self.estimator).options:
                offer = [n for n in names if "orthogonal" in get_spec(n).options]
                raise InvalidArgumentError(f"directions: estimator {self.estimator} offers no choice of directions; "
                                           f"estimators that do: {', '.join(offer)}")
        if not isinstance(self.common_seeds, bool):
            raise InvalidArgumentError(f"common_seeds: need True or False; got {self.common_seeds!r}")
        v = self.min_episodes_per_iter
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InvalidArgumentError(f"min_episodes_per_iter: need a positive integer; got {v!r}")
        if self.evaluator not in ("process", "ray", "serial"):
            raise InvalidArgumentError(f"evaluator: got {self.evaluator!r}; choose process, ray or serial")

    # -- defaults from the task preset -------------------------------------------------------------------------
    def resolved(self, spec: EnvSpec) -> dict[str, Any]:
        """The settings with every task default filled in (what a run actually uses)."""
        p = preset(self.env)
        sigma = self.sigma if self.sigma is not None else (p.noise if p else 0.05)
        lr = self.lr if self.lr is not None else (p.step_size if p else 0.02)
        shift = self.shift if self.shift is not None else (p.shift if p else 0.0)
        dist = _search_distribution(spec.n_params, sigma)
        need = minimum_budget(self.estimator, dist, ("loc",))
        B = self.episodes_per_iter if self.episodes_per_iter else max(2 * p.directions if p else 8, need,
                                                                      self.min_episodes_per_iter)
        if B < need:
            raise InvalidArgumentError(
                f"episodes_per_iter: {self.estimator} needs at least {need} episodes per estimate for "
                f"{spec.n_params} policy parameters ({self.env}); got {B}")
        top = None
        if "top" in get_spec(self.estimator).options:     # top-b selection (ARS): b of the N = B/2 pairs
            n = B // 2
            top = self.top if self.top is not None else (min(p.top, n) if p and p.directions == n else n)
        orthogonal = self.orthogonal()
        used = build_estimator(self.estimator, B, dist, top, orthogonal).n_evals(dist, ("loc",))
        if used != B:
            raise InvalidArgumentError(
                f"episodes_per_iter: {self.estimator} uses {used} of {B} episodes per estimate for "
                f"{spec.n_params} policy parameters ({self.env}); give {used}")
        if self.episodes is not None and self.episodes < B:
            raise BudgetError(
                f"episodes: one iteration of {self.estimator} on {self.env} takes {B} episodes "
                f"(episodes_per_iter); got a budget of {self.episodes}")
        return {"sigma": float(sigma), "lr": float(lr), "shift": float(shift), "episodes_per_iter": int(B),
                "top": top, "orthogonal": orthogonal, "horizon": spec.max_episode_steps, "n_params": spec.n_params,
                "obs_dim": spec.obs_dim, "act_dim": spec.act_dim}

    def orthogonal(self) -> bool:
        """Whether the estimator draws orthogonal directions: as asked, else wherever it offers them."""
        offers = "orthogonal" in get_spec(self.estimator).options
        return offers and self.directions != "independent"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _search_distribution(n_params: int, sigma: float) -> Normal:
    return Normal(torch.zeros(n_params, dtype=torch.float64), torch.full((n_params,), sigma, dtype=torch.float64))


def build_estimator(name: str, episodes_per_iter: int, dist: Normal, top: int | None = None,
                    orthogonal: bool = False) -> Estimator:
    """The registry's estimator ``name`` for ``episodes_per_iter`` episodes on the search distribution; ``top``
    is passed to estimators with top-b selection, ``orthogonal=True`` to those that offer it. The registry's
    estimators take values to minimise, as :class:`~stochgrad.optim.SearchGradient` hands them (−return)."""
    options: dict[str, Any] = {} if top is None else {"top": top}
    if orthogonal:
        options["orthogonal"] = True
    return make_estimator(name, episodes_per_iter, dist, ("loc",), **options)


def scale_returns(values: Tensor, how: str, used: Tensor | None = None) -> Tensor:
    """Returns ``[B]`` → what the estimator sees: divided by the std of ``values[used]`` ("std"; 1 if that std
    is 0), centred ranks, or unchanged."""
    if how == "none":
        return values
    if how == "centered-ranks":
        return centered_ranks(values)
    sel = values if used is None else values[used]
    std = float(sel.std(correction=0)) if sel.numel() > 1 else 0.0
    return values / std if std > 1e-12 else values


class Trainer:
    """One seed of one training run: ``step()`` runs one iteration and returns its metrics.

    Args:
      config: the run's settings.
      seed: this run's seed (the plan's perturbations and every episode seed derive from it).
      evaluator: where the episodes run (anything with ``map(fn, items)``); see
        :func:`stochgrad.evaluators.make_evaluator`.

    Attributes:
      iteration, episodes, steps: counts of training iterations, episodes and environment steps so far.
      normalizer: the running observation normaliser.
      search: the :class:`~stochgrad.optim.SearchGradient` holding the policy mean ``[A·S]``.
    """

    def __init__(self, config: TrainConfig, seed: int, evaluator: Any) -> None:
        config.validate()
        self.config, self.seed, self.evaluator = config, seed, evaluator
        self.spec = env_spec(config.env, config.max_episode_steps, **config.env_kwargs)
        self.settings = config.resolved(self.spec)
        s = self.settings
        self.normalizer = RunningNormalizer(self.spec.obs_dim, config.normalize)
        estimator = build_estimator(config.estimator, s["episodes_per_iter"],
                                    _search_distribution(self.spec.n_params, s["sigma"]), s["top"], s["orthogonal"])
        # The optimiser receives 2σ·ĝ: scale the learning rate of a plain step accordingly (Adam is scale-free).
        lr = s["lr"] * 2 * s["sigma"] if config.optimizer == "sgd" else s["lr"]
        self.search = SearchGradient(torch.zeros(self.spec.n_params, dtype=torch.float64), s["sigma"],
                                     estimator=estimator, popsize=s["episodes_per_iter"], optimizer=config.optimizer,
                                     lr=lr, maximize=True, seed=seed)
        self.iteration = self.episodes = self.steps = 0
        self.last_eval: float | None = None

    # -- episodes ---------------------------------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """The mean policy W, ``[A, S]``."""
        return self.search.loc.detach().numpy().reshape(self.spec.act_dim, self.spec.obs_dim).copy()

    def _episodes(self, points: np.ndarray, stream: int, iteration: int, shift: float,
                  record: bool) -> list[Episode]:
        mean, std = self.normalizer.frozen()
        low, high = np.array(self.spec.low), np.array(self.spec.high)
        seeds = iteration_seeds(self.seed, iteration, len(points), stream,
                                common=self.config.common_seeds and stream == TRAIN)
        return [Episode(self.config.env, np.asarray(w, dtype=np.float64), mean, std, low, high, s,
                        self.spec.max_episode_steps, shift, self.config.actions, record, dict(self.config.env_kwargs))
                for w, s in zip(points, seeds)]

    def evaluate(self, n: int | None = None, iteration: int | None = None) -> tuple[float, float]:
        """Mean and std of the (unshifted) return of the mean policy over ``n`` episodes (not counted)."""
        n = n or self.config.eval_episodes
        it = self.iteration if iteration is None else iteration
        eps = self._episodes(np.repeat(self.search.loc.detach().numpy()[None], n, 0), EVAL, it, 0.0, False)
        rets = np.array([r.ret for r in self.evaluator.map(run_episode, eps)])
        return float(rets.mean()), float(rets.std())

    def done(self) -> bool:
        """Whether the budget is spent: the next iteration's episodes would exceed the episode budget (so a run
        never uses more episodes than asked), or the environment steps reached the step budget (an iteration's
        steps are known only after it, so the last one may pass it)."""
        c = self.config
        return (c.episodes is not None and self.episodes + self.settings["episodes_per_iter"] > c.episodes) or \
            (c.steps is not None and self.steps >= c.steps)

    def step(self) -> dict[str, Any]:
        """One iteration: plan, roll out, estimate, step, update the normaliser; evaluate when due.

        Raises:
          RLEnvironmentError: an environment returned NaN/infinity (before anything of this iteration was
            stepped or written; the trainer is then left with pending points and should be discarded).
        """
        t0 = time.perf_counter()
        points = self.search.ask()
        results: list[EpisodeResult] = self.evaluator.map(
            run_episode, self._episodes(points.numpy(), TRAIN, self.iteration, self.settings["shift"], True))
        shifted = torch.tensor([r.shifted_return for r in results], dtype=torch.float64)
        used = self.search.used(shifted)
        g = self.search.tell(scale_returns(shifted, self.config.reward_scaling, used))
        for r in results:
            self.normalizer.update(r.states)
        self.iteration += 1
        self.episodes += len(results)
        self.steps += sum(r.length for r in results)
        rets = np.array([r.ret for r in results])
        row: dict[str, Any] = {
            "iteration": self.iteration, "episodes": self.episodes, "steps": self.steps,
            "mean_return": float(rets.mean()), "max_return": float(rets.max()),
            "mean_length": float(np.mean([r.length for r in results])),
            "grad_norm": float(g.grad["loc"].norm()), "eval_return": None, "eval_std": None}
        if self.iteration % self.config.eval_every == 0 or self.done():
            row["eval_return"], row["eval_std"] = self.evaluate()
            self.last_eval = row["eval_return"]
        row["seconds"] = time.perf_counter() - t0
        return row

    # -- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors, numbers and strings only)."""
        return {"search": self.search.state_dict(), "normalizer": self.normalizer.state_dict(),
                "iteration": self.iteration, "episodes": self.episodes, "steps": self.steps, "seed": self.seed,
                "env": self.config.env, "weights": self.search.loc.detach().reshape(
                    self.spec.act_dim, self.spec.obs_dim).clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.search.load_state_dict(state["search"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.iteration, self.episodes, self.steps = int(state["iteration"]), int(state["episodes"]), \
            int(state["steps"])
