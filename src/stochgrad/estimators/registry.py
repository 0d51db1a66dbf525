"""Estimators by name, sized to a budget of evaluations: what the lab, the optimiser and the CLI use.

``make_estimator("mvd", budget=40, dist=dist)`` returns the estimator of that kind that uses as many of the
40 evaluations as it can (never more), so that estimators are compared at equal evaluations of f.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stochgrad.distributions.base import Family
from stochgrad.distributions.normal import Normal
from stochgrad.distributions.weak import find_weak_derivative
from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.ars import ARS
from stochgrad.estimators.auto import Auto
from stochgrad.estimators.base import Estimator, resolve_params
from stochgrad.estimators.hybrid import CCMVD, CCSF
from stochgrad.estimators.measure_valued import MeasureValued
from stochgrad.estimators.pathwise import Pathwise
from stochgrad.estimators.score_function import ScoreFunction


@dataclass(frozen=True)
class EstimatorSpec:
    """How to build a named estimator for a budget.

    Attributes:
      name: registry name.
      description: one line for ``--help`` and docs.
      build: ``(budget, dist, params) -> Estimator`` using at most ``budget`` evaluations.
      minimum: ``(dist, params) -> int``, the smallest budget it can work with.
      supports: ``(family class, parameter) -> bool``, whether it claims an estimate for that parameter (the
        statistical tests are generated from this claim, and check it both ways).
      biased: its expectation is not the gradient, by design (``sf-mean``: (N − 1)/N of it).
      options: keyword options ``build`` takes besides the budget (ARS's ``top``), passed by
        :func:`make_estimator`.
    """

    name: str
    description: str
    build: Callable[[int, Family, tuple[str, ...]], Estimator]
    minimum: Callable[[Family, tuple[str, ...]], int]
    supports: Callable[[type, str], bool] = lambda family, param: True
    biased: bool = False
    options: tuple[str, ...] = ()


def _components(dist: Family, params: tuple[str, ...]) -> int:
    return sum(dist.n_components(p) for p in params)


def _sf(baseline: str | None, antithetic: bool = False) -> tuple[Callable, Callable]:
    unit = 2 if antithetic else 1

    def build(budget, dist, params):
        return ScoreFunction(budget - budget % unit, baseline=baseline, antithetic=antithetic)

    return build, lambda dist, params: ScoreFunction.min_samples(baseline, antithetic)


def _mvd(coupled: bool, shared_base: bool = False) -> tuple[Callable, Callable]:
    def build(budget, dist, params):
        return MeasureValued(max(1, budget // (2 * _components(dist, params))), coupled=coupled,
                             shared_base=shared_base)

    return build, lambda dist, params: 2 * _components(dist, params)


def _hybrid(cls: type) -> tuple[Callable, Callable]:
    """Half the budget to the score function (N pairs), half to K components per parameter with M = 1 (CCSF
    takes M = 2 when K = 1, since its second score function needs two pairs for its baseline)."""
    second_min = 4 if cls is CCSF else 2

    def build(budget, dist, params):
        P = len(params)
        J = min(dist.n_components(p) for p in params)
        k = max(1, min(J, (budget // 2) // (2 * P)))
        m = 2 if cls is CCSF and k == 1 else 1
        n = (budget - 2 * m * k * P) // 2
        return cls(n_samples=n, samples_per_dim=m, k=k)

    return build, lambda dist, params: 4 + second_min * len(params)


_REGISTRY: dict[str, EstimatorSpec] = {}


def register_estimator(name: str, description: str, build: Callable, minimum: Callable,
                       supports: Callable[[type, str], bool] | None = None, biased: bool = False,
                       options: tuple[str, ...] = ()) -> None:
    """Make an estimator available by name to the lab, the optimiser and the CLI.

    ``supports(family, param)`` says which parameters it estimates (default: all); registering puts it under
    every statistical test on every family and parameter it supports."""
    _REGISTRY[name] = EstimatorSpec(name, description, build, minimum,
                                    supports or (lambda family, param: True), biased, tuple(options))


def _score(family: type, param: str) -> bool:
    return param in family.score_params


def _antithetic(family: type, param: str) -> bool:
    return param in family.score_params and family.symmetric


def _weak(family: type, param: str) -> bool:
    return find_weak_derivative(family, param) is not None


def _reparam(family: type, param: str) -> bool:
    return param in family.reparam_params


def _score_and_weak(family: type, param: str) -> bool:
    return _score(family, param) and _weak(family, param)


def _score_or_weak(family: type, param: str) -> bool:
    return _score(family, param) or _weak(family, param)


SUPPORTS = {"sf": _score, "sf-mean": _score, "sf-loo": _score, "sf-optimal": _score, "sf-antithetic": _antithetic,
            "sf-antithetic-loo": _antithetic, "mvd": _weak, "mvd-shared": _weak, "mvd-uncoupled": _weak,
            "pathwise": _reparam, "ccmvd": _score_and_weak, "ccsf": _score, "auto": _score_or_weak}

for _name, _desc, (_build, _min) in [
    ("sf", "score function, no baseline", _sf(None)),
    ("sf-mean", "score function, batch-mean baseline (biased by (N−1)/N)", _sf("mean")),
    ("sf-loo", "score function, leave-one-out baseline (RLOO)", _sf("loo")),
    ("sf-optimal", "score function, per-component optimal baseline from the other samples", _sf("optimal")),
    ("sf-antithetic", "score function on antithetic pairs (x, 2μ − x), no baseline (OpenAI-ES style)",
     _sf(None, True)),
    ("sf-antithetic-loo", "score function on antithetic pairs, leave-one-pair-out baseline", _sf("loo", True)),
    ("mvd", "coupled measure-valued derivative, M = budget // (2·components)", _mvd(True)),
    ("mvd-shared", "coupled MVD with one base draw per sample shared by all components (optax's layout)",
     _mvd(True, True)),
    ("mvd-uncoupled", "uncoupled measure-valued derivative", _mvd(False)),
    ("pathwise", "pathwise (reparameterisation) gradient; f must be differentiable torch code",
     (lambda budget, dist, params: Pathwise(budget), lambda dist, params: 1)),
    ("ccmvd", "convex-combined MVD: score function (N pairs, half the budget) + MVD on the K noisiest components",
     _hybrid(CCMVD)),
    ("ccsf", "CCMVD's control: the same split, a second score function instead of MVD", _hybrid(CCSF)),
    ("auto", "budget-aware split between score function and per-component MVD by predicted MSE",
     (lambda budget, dist, params: Auto(budget), lambda dist, params: Auto.minimum_budget(dist, params))),
]:
    register_estimator(_name, _desc, _build, _min, SUPPORTS[_name], biased=_name == "sf-mean")


def _ars(budget: int, dist: Family, params: tuple[str, ...], top: int | None = None,
         orthogonal: bool | None = None) -> ARS:
    """N = budget // 2 pairs, b = ``top`` (default N // 2, at least 1), independent or ``orthogonal`` directions
    (default independent); "best" is the smallest value, since callers of the registry (the optimiser, the RL
    trainer through it) hand the estimator values to minimise."""
    n = budget // 2
    return ARS(n, max(1, n // 2) if top is None else top, best="min", orthogonal=bool(orthogonal))


register_estimator(
    "ars", "ARS V2-t: N = budget/2 antithetic pairs, the b best kept (top, default N/2; biased for b < N); "
    "orthogonal=True draws the N directions orthogonal", _ars,
    lambda dist, params: 2, lambda family, param: issubclass(family, Normal) and param == "loc", biased=True,
    options=("top", "orthogonal"))


def estimator_names() -> list[str]:
    """Every registered name, in registration order."""
    return list(_REGISTRY)


def get_spec(name: str) -> EstimatorSpec:
    """The spec registered as ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidArgumentError(
            f"estimator: unknown name {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def minimum_budget(name: str, dist: Family, params: Sequence[str] | None = None) -> int:
    """The smallest number of evaluations estimator ``name`` can work with on ``dist``."""
    return get_spec(name).minimum(dist, resolve_params(dist, params))


def make_estimator(name: str, budget: int, dist: Family, params: Sequence[str] | None = None,
                   **options: object) -> Estimator:
    """Estimator ``name`` using at most ``budget`` evaluations of f per estimate on ``dist``.

    ``options`` are the estimator's own settings that its spec declares (``top=`` for ARS); None means its
    default.

    Raises:
      InvalidArgumentError: unknown name (the message lists the valid ones), or an option it does not take.
      BudgetError: ``budget`` is below the estimator's minimum (the message says the minimum).
    """
    spec = get_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise InvalidArgumentError(f"{unknown[0]}: estimator {name} takes no such option; its options are "
                                   f"{list(spec.options) or 'none'}")
    names = resolve_params(dist, params)
    need = spec.minimum(dist, names)
    if budget < need:
        raise BudgetError(
            f"budget: {name} needs at least {need} evaluations per estimate for {type(dist).__name__} with "
            f"{_components(dist, names)} component(s) in {list(names)}; got {budget}")
    return spec.build(budget, dist, names, **{k: v for k, v in options.items() if v is not None})
