"""``minimize``: run an ask/tell optimiser (the staged search by default, or a :class:`SearchGradient`) until a
budget, a target value or a time limit."""

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
from stochgrad.optim.staged import StagedSearch


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


def check_first_step(opt: SearchGradient | QuasiNewtonSearch | StagedSearch, budget: int) -> None:
    """Raise :class:`BudgetError` when ``opt`` has taken no step yet and its first one needs more than ``budget``
    evaluations (a run that could do nothing is refused before any work)."""
    if isinstance(opt, SearchGradient):
        need, what = opt.next_evals(), f"{opt.estimator_name} with popsize {opt.popsize}"
    else:
        need, what = opt.first_step_evals(), f"{type(opt).__name__} (f(x0) twice, a gradient, a line-search trial)"
    if opt.n_steps == 0 and need > budget:
        raise BudgetError(f"budget: one step of {what} needs {need} evaluations of f; got a budget of {budget}")


#: What :func:`minimize` (and ``stochgrad optimize``) use unless told otherwise: the staged search
#: (:class:`~stochgrad.optim.staged.StagedSearch`): the quasi-Newton search on orthogonal differences until it
#: has converged once, then SNES-style natural steps. Measured on bbob at D = 10 (docs/optim.md), 1000·D
#: evaluations: it reaches Δf = 1e-8 on 8 of 24 functions, SNES-style steps alone on 3.
DEFAULTS: dict = {"optimizer": "staged"}

#: What an estimator given without an optimizer runs with: SNES-style natural-gradient steps that also adapt σ,
#: on centred ranks (the earlier default, with the antithetic score function and SNES's population).
SEARCH_DEFAULTS: dict = {"estimator": "sf-antithetic", "optimizer": "natural", "fitness_shaping": "centered-ranks"}

#: Every update rule by name: torch optimisers on the search gradient, SNES-style natural steps,
#: ``"quasi-newton"`` (:class:`~stochgrad.optim.quasi_newton.QuasiNewtonSearch`, its own gradient estimates) and
#: ``"staged"`` (the two in sequence).
OPTIMIZER_NAMES: tuple[str, ...] = (*OPTIMIZERS, "natural", "quasi-newton", "staged")

#: The options the quasi-Newton and staged searches take.
QUASI_NEWTON_OPTIONS = ("directions", "differences", "memory", "sigma_ratio", "sigma_floor", "max_trials",
                        "patience", "max_frames", "maximize", "seed", "dtype")

OwnGradient = QuasiNewtonSearch | StagedSearch


def resolve_optimizer(optimizer: str | Callable | None, estimator: Estimator | str | None) -> str | Callable:
    """The update rule to use: ``optimizer`` if given, else ``"natural"`` when an estimator was chosen (its
    search gradient needs steps) and :data:`DEFAULTS`'s ``"staged"`` otherwise."""
    if optimizer is not None:
        return optimizer
    return DEFAULTS["optimizer"] if estimator is None else SEARCH_DEFAULTS["optimizer"]


def make_search(x0: Tensor, sigma0: float | Tensor, estimator: Estimator | str | None = None,
                optimizer: str | Callable | None = None, **options) -> SearchGradient | OwnGradient:
    """The ask/tell optimiser :func:`minimize` runs.

    ``optimizer`` (see :func:`resolve_optimizer` for the default): ``"staged"`` or ``"quasi-newton"`` give a
    :class:`StagedSearch` or :class:`QuasiNewtonSearch`, which estimate their gradients themselves and take only
    :data:`QUASI_NEWTON_OPTIONS`; anything else a :class:`SearchGradient` with ``estimator`` (default: the
    antithetic score function) and centred ranks unless ``fitness_shaping`` is given.

    Raises:
      InvalidArgumentError: an estimator or an option the chosen optimiser does not take (the message says
        which optimiser takes it).
    """
    optimizer = resolve_optimizer(optimizer, estimator)
    if optimizer in ("quasi-newton", "staged"):
        if estimator is not None and estimator != QuasiNewtonSearch.estimator_name:
            raise InvalidArgumentError(
                f"estimator: optimizer={optimizer!r} estimates its gradients itself (orthogonal differences on the "
                f"ball-smoothed f); got estimator={estimator!r}: leave it unset, or pass optimizer='natural' (or "
                "'adam', 'sgd') to step on that estimator's gradients")
        unknown = sorted(set(options) - set(QUASI_NEWTON_OPTIONS))
        if unknown:
            raise InvalidArgumentError(f"{unknown[0]}: optimizer={optimizer!r} takes no such option (it is an option "
                                       f"of the search-gradient optimizers 'natural', 'adam', 'sgd'); its options "
                                       f"are {list(QUASI_NEWTON_OPTIONS)}")
        if optimizer == "staged":
            return StagedSearch(x0, sigma0, **options)
        return QuasiNewtonSearch(x0, sigma0, **options)
    options = {"fitness_shaping": SEARCH_DEFAULTS["fitness_shaping"], **options}
    return SearchGradient(x0, sigma0, estimator=SEARCH_DEFAULTS["estimator"] if estimator is None else estimator,
                          optimizer=optimizer, **options)


def minimize(f: Callable[[Tensor], Tensor], x0: Tensor, sigma0: float | Tensor, budget: int,
             estimator: Estimator | str | None = None, target: float | None = None, time_limit: float | None = None,
             evaluator: Evaluator | None = None, progress: bool = False,
             callback: Callable[[SearchGradient | OwnGradient, dict], bool | None] | None = None,
             continue_from: SearchGradient | OwnGradient | None = None, **options) -> MinimizeResult:
    """Minimise a black-box ``f`` with search gradients.

    Args:
      f: batched ``[n, D] -> [n]`` (or what ``evaluator`` expects, e.g. a function of one point with
        ``evaluators.Serial()`` or ``evaluators.ProcessPool``).
      x0: initial point ``[D]``.
      sigma0: initial search scale.
      budget: the most evaluations of f to use (a step that would exceed it is not taken).
      estimator: an estimator or registry name for search-gradient steps (then the optimizer defaults to
        "natural"); None (default): the staged search, which estimates its gradients itself.
      target: stop as soon as a value <= target is seen.
      time_limit: stop after this many seconds (checked between steps).
      evaluator: how to evaluate f (vectorised by default).
      progress: show a progress bar over evaluations.
      callback: called after every step with (optimizer, history row); returning True stops.
      continue_from: continue this optimiser (e.g. restored from a checkpoint) instead of a new
        one; ``x0``, ``sigma0``, ``estimator`` and ``options`` are then ignored.
      **options: passed to :func:`make_search`: optimizer (the update rule: "staged", "quasi-newton",
        "natural", "adam", "sgd" or a callable; default "staged", or "natural" when an estimator is given), and
        the chosen optimiser's own options
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
