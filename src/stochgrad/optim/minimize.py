"""``minimize``: run a :class:`SearchGradient` until a budget, a target value or a time limit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.base import Estimator, Evaluator
from stochgrad.optim.quasi_newton import QuasiNewtonSearch
from stochgrad.optim.search import OPTIMIZERS, SearchGradient


@dataclass
class MinimizeResult:
    """What :func:`minimize` found.

    Attributes:
      x: the best point evaluated, ``[D]``.
      fun: f at ``x``.
      n_evals: evaluations of f used.
      n_steps: gradient steps taken.
      loc: the final mean of the search distribution.
      stop: why it stopped: "budget", "target", "time" or "callback".
      history: one dict per step: step, n_evals, evals (of this step), best_f, mean_f (mean of f over the step's
        points), sigma (mean scale), seconds.
    """

    x: Tensor
    fun: float
    n_evals: int
    n_steps: int
    loc: Tensor
    stop: str
    history: list[dict] = field(default_factory=list)


def check_first_step(opt: SearchGradient | QuasiNewtonSearch, budget: int) -> None:
    """Raise :class:`BudgetError` when ``opt`` has taken no step yet and its first one needs more than ``budget``
    evaluations (a run that could do nothing is refused before any work)."""
    need = opt.next_evals()
    if opt.n_steps == 0 and need > budget:
        raise BudgetError(f"budget: one step of {opt.estimator_name} with popsize {opt.popsize} needs {need} "
                          f"evaluations of f; got a budget of {budget}")


#: What :func:`minimize` (and ``stochgrad optimize``) use unless told otherwise: the best configuration measured
#: so far (docs/optim.md): SNES-style natural-gradient steps that also adapt σ, on centred ranks, with the
#: antithetic score function and SNES's population. Adam at a fixed σ, the earlier default, cannot converge
#: below the noise of a fixed σ (on bbob at D = 10 it reached Δf = 1e-8 on none of f1, f2, f8, f10, f15 within
#: 2000·D evaluations; this configuration on f1 and f2).
DEFAULTS: dict = {"estimator": "sf-antithetic", "optimizer": "natural", "fitness_shaping": "centered-ranks"}

#: Every update rule by name: torch optimisers on the search gradient, SNES-style natural steps, and
#: ``"quasi-newton"`` (:class:`~stochgrad.optim.quasi_newton.QuasiNewtonSearch`, its own gradient estimates).
OPTIMIZER_NAMES: tuple[str, ...] = (*OPTIMIZERS, "natural", "quasi-newton")

QUASI_NEWTON_OPTIONS = ("directions", "differences", "memory", "sigma_ratio", "sigma_floor", "max_trials",
                        "patience", "maximize", "seed", "dtype")


def make_search(x0: Tensor, sigma0: float | Tensor, estimator: Estimator | str | None = None,
                optimizer: str | Callable = DEFAULTS["optimizer"], **options) -> SearchGradient | QuasiNewtonSearch:
    """The ask/tell optimiser :func:`minimize` runs: a :class:`SearchGradient` with ``estimator`` (default
    :data:`DEFAULTS`) and ``optimizer``, or for ``optimizer="quasi-newton"`` a :class:`QuasiNewtonSearch`, which
    estimates its gradients itself and takes only its own options (:data:`QUASI_NEWTON_OPTIONS`).

    Raises:
      InvalidArgumentError: ``estimator`` or an option the quasi-Newton search does not take.
    """
    if optimizer == "quasi-newton":
        if estimator is not None and estimator != QuasiNewtonSearch.estimator_name:
            raise InvalidArgumentError(
                f"estimator: optimizer='quasi-newton' estimates its gradients itself (orthogonal differences on the "
                f"ball-smoothed f); got estimator={estimator!r}: leave it unset or use another optimizer")
        unknown = sorted(set(options) - set(QUASI_NEWTON_OPTIONS))
        if unknown:
            raise InvalidArgumentError(f"{unknown[0]}: optimizer='quasi-newton' takes no such option; its options are "
                                       f"{list(QUASI_NEWTON_OPTIONS)}")
        return QuasiNewtonSearch(x0, sigma0, **options)
    options = {"fitness_shaping": DEFAULTS["fitness_shaping"], **options}
    return SearchGradient(x0, sigma0, estimator=DEFAULTS["estimator"] if estimator is None else estimator,
                          optimizer=optimizer, **options)


def minimize(f: Callable[[Tensor], Tensor], x0: Tensor, sigma0: float | Tensor, budget: int,
             estimator: Estimator | str | None = None, target: float | None = None, time_limit: float | None = None,
             evaluator: Evaluator | None = None, progress: bool = False,
             callback: Callable[[SearchGradient, dict], bool | None] | None = None,
             continue_from: SearchGradient | None = None, **options) -> MinimizeResult:
    """Minimise a black-box ``f`` with search gradients.

    Args:
      f: batched ``[n, D] -> [n]`` (or what ``evaluator`` expects, e.g. a function of one point with
        ``evaluators.Serial()`` or ``evaluators.ProcessPool``).
      x0: initial point ``[D]``.
      sigma0: initial search scale.
      budget: the most evaluations of f to use (a step that would exceed it is not taken).
      estimator: an estimator or registry name (default: :data:`DEFAULTS`, the antithetic score function; the
        quasi-Newton search takes none).
      target: stop as soon as a value <= target is seen.
      time_limit: stop after this many seconds (checked between steps).
      evaluator: how to evaluate f (vectorised by default).
      progress: show a progress bar over evaluations.
      callback: called after every step with (optimizer, history row); returning True stops.
      continue_from: continue this :class:`SearchGradient` (e.g. restored from a checkpoint) instead of a new
        one; ``x0``, ``sigma0``, ``estimator`` and ``options`` are then ignored.
      **options: passed to :func:`make_search`: optimizer (the update rule: "adam", "sgd", "natural",
        "quasi-newton" or a callable; default "natural"), and the chosen optimiser's own options
        (:class:`SearchGradient`: popsize, lr, learn_scale, sigma_decay, fitness_shaping (default
        "centered-ranks"), seed, ...; :class:`QuasiNewtonSearch`: directions, differences, memory, seed, ...).

    Raises:
      BudgetError: a new run's ``budget`` is smaller than one step (the message says the step's evaluations).

    Example::

        res = minimize(lambda x: (x ** 2).sum(-1), torch.ones(10), 0.3, budget=5000, target=1e-6)
        res.x, res.fun, res.n_evals
    """
    if not isinstance(budget, int) or budget < 1:
        raise InvalidArgumentError(f"budget: need a positive number of evaluations; got {budget!r}")
    if time_limit is not None and not time_limit > 0:
        raise InvalidArgumentError(f"time_limit: must be > 0 seconds; got {time_limit}")
    opt = continue_from if continue_from is not None else make_search(x0, sigma0, estimator, **options)
    check_first_step(opt, budget)
    history: list[dict] = []
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    bar = tqdm(total=budget, initial=min(opt.n_evals, budget), unit="eval", disable=not progress,
               dynamic_ncols=True, desc="optimize")
    try:
        while (stop := stop_reason(opt, budget, target, deadline)) is None:
            row = take_step(opt, f, evaluator, start)
            history.append(row)
            bar.update(row["evals"])
            bar.set_postfix(best=f"{opt.best_f:.4g}", sigma=f"{row['sigma']:.2g}", refresh=False)
            if callback is not None and callback(opt, row):
                stop = "callback"
                break
    finally:
        bar.close()
    return MinimizeResult(opt.best_x.clone(), opt.best_f if math.isfinite(opt.best_f) else math.nan, opt.n_evals,
                          opt.n_steps, opt.loc.detach().clone(), stop, history)


def stop_reason(opt: SearchGradient, budget: int, target: float | None = None,
                deadline: float | None = None) -> str | None:
    """Why the search stops now ("target", "time", "budget"), or None: the target value was seen, the
    ``time.perf_counter()`` deadline passed, or the next step would exceed ``budget`` evaluations."""
    if target is not None and opt.best_f <= target:
        return "target"
    if deadline is not None and time.perf_counter() >= deadline:
        return "time"
    if opt.n_evals + opt.next_evals() > budget:
        return "budget"
    return None


def take_step(opt: SearchGradient, f: Callable[[Tensor], Tensor], evaluator: Evaluator | None,
              start: float) -> dict:
    """One ask/evaluate/tell step; returns its history row (``step``, ``n_evals``, ``evals`` of this step,
    ``best_f``, ``mean_f``, ``sigma`` (mean scale), ``seconds`` since ``start``)."""
    points = opt.ask()
    values = f(points) if evaluator is None else evaluator(f, points)
    opt.tell(values)
    return {"step": opt.n_steps, "n_evals": opt.n_evals, "evals": int(points.shape[0]), "best_f": opt.best_f,
            "mean_f": float(torch.as_tensor(values, dtype=torch.float64).mean()),
            "sigma": float(opt.scale.mean()), "seconds": time.perf_counter() - start}
