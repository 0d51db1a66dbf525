"""One registry of (family, parameter, estimator) cases with exact gradients; every statistical test uses it.

Each :class:`Problem` is a family at fixed float64 parameters, a test function f with a few cross terms (so
that the "other coordinates" of measure-valued points matter), and the exact ``E f`` as differentiable torch
code of the parameters: closed forms for the continuous families, exact enumeration (truncated where the
tail is below 1e-13) for the discrete ones. Autograd of the exact value gives the exact gradient. Every family
also has a D >= 5 problem (``*-d6``, Categorical ``-d5``) with a non-polynomial f that couples all coordinates,
exact through the families' Laplace transforms.

The cases are generated from the estimator registry (``stochgrad.estimators.registry``): every registered
estimator, sized to a small budget, on every (problem, parameter) its spec ``supports``; stateful estimators
also after a warm-up. Registering an estimator puts it under every test that iterates :data:`CASES`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import stochgrad as sg
from stochgrad.estimators import registry

T = torch.float64


def t(*v: float) -> Tensor:
    return torch.tensor(v, dtype=T)


@dataclass
class Problem:
    name: str
    make: Callable[[dict[str, Tensor]], sg.Family]   # params -> family
    params: dict[str, Tensor]                         # per-copy parameters
    f: Callable[[Tensor], Tensor]                     # [..., D] -> [...]
    exact: Callable[[dict[str, Tensor]], Tensor]      # params -> E f (differentiable)

    def dist(self, copies: int | None = None) -> sg.Family:
        ps = self.params if copies is None else {
            k: v.expand(copies, *v.shape).clone() for k, v in self.params.items()}
        return self.make(ps)

    def exact_grad(self) -> dict[str, Tensor]:
        ps = {k: v.clone().requires_grad_(True) for k, v in self.params.items()}
        value = self.exact(ps)
        grads = torch.autograd.grad(value, list(ps.values()), allow_unused=True)
        return {k: (g if g is not None else torch.zeros_like(ps[k])) for k, g in zip(ps, grads)}


def _enumerate(family: Callable[[dict[str, Tensor]], torch.distributions.Distribution],
               support: list[Tensor], f: Callable[[Tensor], Tensor]) -> Callable[[dict[str, Tensor]], Tensor]:
    """E f by summing over the product of per-coordinate supports, using torch's (differentiable) pmf."""
    grid = torch.tensor(list(itertools.product(*[s.tolist() for s in support])), dtype=T)   # [G, D]

    def exact(ps: dict[str, Tensor]) -> Tensor:
        d = family(ps)
        logp = d.log_prob(grid).sum(-1)            # [G]
        return (logp.exp() * f(grid)).sum()

    return exact


# -- continuous families: closed forms ------------------------------------------------------------------------
def _normal_f(x: Tensor) -> Tensor:
    return x[..., 0] ** 2 + torch.sin(x[..., 1]) + 0.5 * x[..., 0] * x[..., 2] + torch.cos(x[..., 2])


def _normal_exact(ps):
    m, s = ps["loc"], ps["scale"]
    return (m[0] ** 2 + s[0] ** 2 + torch.sin(m[1]) * torch.exp(-s[1] ** 2 / 2) + 0.5 * m[0] * m[2]
            + torch.cos(m[2]) * torch.exp(-s[2] ** 2 / 2))


def _exp_f(x):
    return x[..., 0] ** 2 + torch.exp(-x[..., 1]) + x[..., 0] * x[..., 1]


def _exp_exact(ps):
    r = ps["rate"]
    return 2 / r[0] ** 2 + r[1] / (r[1] + 1) + 1 / (r[0] * r[1])


def _gamma_exact(ps):
    a, b = ps["concentration"], ps["rate"]
    return (a[0] * (a[0] + 1) / b[0] ** 2 + (b[1] / (b[1] + 1)) ** a[1] + a[0] / b[0] * a[1] / b[1])


def _uniform_f(x):
    return x[..., 0] ** 2 + torch.sin(x[..., 1]) + x[..., 0] * x[..., 1]


def _uniform_exact(ps):
    lo, hi = ps["low"], ps["high"]
    return ((hi[0] ** 3 - lo[0] ** 3) / (3 * (hi[0] - lo[0])) + (torch.cos(lo[1]) - torch.cos(hi[1])) / (hi[1] - lo[1])
            + (lo[0] + hi[0]) / 2 * (lo[1] + hi[1]) / 2)


# -- discrete families: enumeration ---------------------------------------------------------------------------
def _binary_f(x):
    return (x[..., 0] + 2 * x[..., 1] - x[..., 2]) ** 2 + 3 * x[..., 0] * x[..., 1] * x[..., 2] + torch.sin(x[..., 2])


def _count_f(x):
    return torch.sqrt(x[..., 0] + 1) + torch.cos(x[..., 1]) + 0.2 * x[..., 0] * x[..., 1]


_CAT_TABLE = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.0, -0.5], [-2.0, 0.7, 1.1]], dtype=T)


def _cat_f(x):
    x = x.long()
    return _CAT_TABLE[x[..., 0], x[..., 1]] + 0.5 * x[..., 0].to(T) ** 2 - torch.cos(x[..., 1].to(T))


_range = lambda n: torch.arange(n, dtype=T)  # noqa: E731

PROBLEMS: dict[str, Problem] = {p.name: p for p in [
    Problem("normal", lambda ps: sg.Normal(ps["loc"], ps["scale"]),
            {"loc": t(0.3, -0.5, 1.0), "scale": t(0.5, 1.2, 0.8)}, _normal_f, _normal_exact),
    Problem("bernoulli-probs", lambda ps: sg.Bernoulli(probs=ps["probs"]), {"probs": t(0.2, 0.5, 0.7)}, _binary_f,
            _enumerate(lambda ps: torch.distributions.Bernoulli(probs=ps["probs"]), [_range(2)] * 3, _binary_f)),
    Problem("bernoulli-logits", lambda ps: sg.Bernoulli(logits=ps["logits"]), {"logits": t(-1.0, 0.0, 0.8)},
            _binary_f,
            _enumerate(lambda ps: torch.distributions.Bernoulli(logits=ps["logits"]), [_range(2)] * 3, _binary_f)),
    Problem("categorical", lambda ps: sg.Categorical(ps["logits"]),
            {"logits": torch.tensor([[0.2, -0.3, 0.5], [1.0, 0.0, -1.0]], dtype=T)}, _cat_f,
            _enumerate(lambda ps: torch.distributions.Categorical(logits=ps["logits"]), [_range(3)] * 2, _cat_f)),
    Problem("poisson", lambda ps: sg.Poisson(ps["rate"]), {"rate": t(1.5, 3.0)}, _count_f,
            _enumerate(lambda ps: torch.distributions.Poisson(ps["rate"]), [_range(60)] * 2, _count_f)),
    Problem("exponential", lambda ps: sg.Exponential(ps["rate"]), {"rate": t(0.7, 2.0)}, _exp_f, _exp_exact),
    Problem("gamma", lambda ps: sg.Gamma(ps["concentration"], ps["rate"]),
            {"concentration": t(2.0, 0.7), "rate": t(1.5, 3.0)}, _exp_f, _gamma_exact),
    Problem("binomial", lambda ps: sg.Binomial(t(5.0, 12.0), ps["probs"]), {"probs": t(0.3, 0.6)}, _count_f,
            _enumerate(lambda ps: torch.distributions.Binomial(t(5.0, 12.0), probs=ps["probs"]),
                       [_range(6), _range(13)], _count_f)),
    Problem("geometric", lambda ps: sg.Geometric(ps["probs"]), {"probs": t(0.4, 0.7)}, _count_f,
            _enumerate(lambda ps: torch.distributions.Geometric(probs=ps["probs"]), [_range(90), _range(40)],
                       _count_f)),
    Problem("uniform", lambda ps: sg.Uniform(ps["high"], ps["low"]), {"low": t(0.0, -1.0), "high": t(1.5, 2.0)},
            _uniform_f, _uniform_exact),
]}


# -- D >= 5, a non-polynomial, non-separable f: exact through each family's Laplace transform -----------------------
#: f(x) = exp(−Σ_i t_i x_i) + Σ_i c_i exp(−s_i x_i): every coordinate interacts with every other through the
#: first term, and E f = Π_i L_i(t_i) + Σ_i c_i L_i(s_i) with L_i(u) = E exp(−u X_i) in closed form.
_T6 = t(0.3, -0.2, 0.25, 0.1, -0.15, 0.2)
_S6 = t(1.0, 0.5, 0.8, 0.6, 0.9, 0.7)
_C6 = t(1.0, -0.5, 0.8, -0.3, 0.6, -0.7)


def _exp_mix_f(x: Tensor) -> Tensor:
    x = x.to(T)
    D = x.shape[-1]
    return torch.exp(-(x * _T6[:D]).sum(-1)) + (_C6[:D] * torch.exp(-_S6[:D] * x)).sum(-1)


def _exp_mix_exact(laplace: Callable[[dict[str, Tensor], Tensor], Tensor]) -> Callable[[dict[str, Tensor]], Tensor]:
    """E f from ``laplace(params, u) = E exp(−u_i X_i)`` per coordinate (u shaped [D])."""
    def exact(ps: dict[str, Tensor]) -> Tensor:
        D = next(iter(ps.values())).shape[0]
        return laplace(ps, _T6[:D]).prod() + (_C6[:D] * laplace(ps, _S6[:D])).sum()

    return exact


def _bernoulli_laplace(p: Tensor, u: Tensor) -> Tensor:
    return 1 - p + p * torch.exp(-u)


_N6 = t(5.0, 12.0, 3.0, 8.0, 1.0, 6.0)
_CAT_LOGITS6 = torch.tensor([[0.2, -0.3, 0.5], [1.0, 0.0, -1.0], [-0.4, 0.9, 0.1], [0.0, 0.0, 0.0],
                             [1.5, -0.5, 0.3]], dtype=T)


def _categorical_laplace(ps: dict[str, Tensor], u: Tensor) -> Tensor:
    p = torch.softmax(ps["logits"], -1)
    k = torch.arange(p.shape[-1], dtype=T)
    return (p * torch.exp(-u[:, None] * k)).sum(-1)


PROBLEMS_D6: list[Problem] = [
    Problem("normal-d6", lambda ps: sg.Normal(ps["loc"], ps["scale"]),
            {"loc": t(0.3, -0.5, 1.0, 0.0, -1.2, 0.7), "scale": t(0.5, 1.2, 0.8, 0.3, 1.0, 0.6)}, _exp_mix_f,
            _exp_mix_exact(lambda ps, u: torch.exp(-u * ps["loc"] + 0.5 * (u * ps["scale"]) ** 2))),
    Problem("bernoulli-probs-d6", lambda ps: sg.Bernoulli(probs=ps["probs"]),
            {"probs": t(0.2, 0.5, 0.7, 0.9, 0.1, 0.4)}, _exp_mix_f,
            _exp_mix_exact(lambda ps, u: _bernoulli_laplace(ps["probs"], u))),
    Problem("bernoulli-logits-d6", lambda ps: sg.Bernoulli(logits=ps["logits"]),
            {"logits": t(-1.0, 0.0, 0.8, 2.0, -2.0, 0.3)}, _exp_mix_f,
            _exp_mix_exact(lambda ps, u: _bernoulli_laplace(torch.sigmoid(ps["logits"]), u))),
    Problem("categorical-d5", lambda ps: sg.Categorical(ps["logits"]), {"logits": _CAT_LOGITS6}, _exp_mix_f,
            _exp_mix_exact(_categorical_laplace)),
    Problem("poisson-d6", lambda ps: sg.Poisson(ps["rate"]), {"rate": t(1.5, 3.0, 0.5, 2.0, 4.0, 1.0)}, _exp_mix_f,
            _exp_mix_exact(lambda ps, u: torch.exp(ps["rate"] * (torch.exp(-u) - 1)))),
    Problem("exponential-d6", lambda ps: sg.Exponential(ps["rate"]), {"rate": t(0.7, 2.0, 1.5, 3.0, 1.0, 0.8)},
            _exp_mix_f, _exp_mix_exact(lambda ps, u: ps["rate"] / (ps["rate"] + u))),
    Problem("gamma-d6", lambda ps: sg.Gamma(ps["concentration"], ps["rate"]),
            {"concentration": t(2.0, 0.7, 1.5, 3.0, 0.5, 1.2), "rate": t(1.5, 3.0, 1.0, 2.0, 0.8, 2.5)}, _exp_mix_f,
            _exp_mix_exact(lambda ps, u: (ps["rate"] / (ps["rate"] + u)) ** ps["concentration"])),
    Problem("binomial-d6", lambda ps: sg.Binomial(_N6, ps["probs"]), {"probs": t(0.3, 0.6, 0.5, 0.2, 0.7, 0.4)},
            _exp_mix_f, _exp_mix_exact(lambda ps, u: _bernoulli_laplace(ps["probs"], u) ** _N6)),
    Problem("geometric-d6", lambda ps: sg.Geometric(ps["probs"]), {"probs": t(0.4, 0.7, 0.5, 0.3, 0.8, 0.6)},
            _exp_mix_f, _exp_mix_exact(lambda ps, u: ps["probs"] / (1 - (1 - ps["probs"]) * torch.exp(-u)))),
    Problem("uniform-d6", lambda ps: sg.Uniform(ps["high"], ps["low"]),
            {"low": t(0.0, -1.0, 0.5, -0.5, 0.0, 1.0), "high": t(1.5, 2.0, 1.0, 0.5, 3.0, 1.5)}, _exp_mix_f,
            _exp_mix_exact(lambda ps, u: (torch.exp(-u * ps["low"]) - torch.exp(-u * ps["high"]))
                           / (u * (ps["high"] - ps["low"])))),
]
PROBLEMS.update({p.name: p for p in PROBLEMS_D6})


@dataclass
class Case:
    """One (problem, parameter, estimator) combination that the library claims to support.

    ``warmup`` estimates are made (same copies, same generator) before the one that is tested: stateful
    estimators are tested at their first estimate and after a warm-up. ``factor`` is the documented ratio of
    the estimator's expectation to the gradient (1 unless the registry marks it biased)."""

    problem: str
    param: str
    estimator: str
    make: Callable[[], sg.Estimator]
    warmup: int = 0
    factor: float = 1.0

    @property
    def id(self) -> str:
        return f"{self.problem}:{self.param}:{self.estimator}" + (f":warm{self.warmup}" if self.warmup else "")


#: Fixed configurations (not sized to a budget) for the behaviour tests, and the two variants the registry does
#: not name; the z-tests run these and every registered estimator.
ESTIMATORS: dict[str, Callable[[], sg.Estimator]] = {
    "sf": lambda: sg.ScoreFunction(8),
    "sf-loo": lambda: sg.ScoreFunction(8, baseline="loo"),
    "sf-optimal": lambda: sg.ScoreFunction(8, baseline="optimal"),
    "sf-antithetic": lambda: sg.ScoreFunction(8, antithetic=True),
    "sf-antithetic-loo": lambda: sg.ScoreFunction(8, baseline="loo", antithetic=True),
    "sf-antithetic-optimal": lambda: sg.ScoreFunction(8, baseline="optimal", antithetic=True),
    "mvd": lambda: sg.MeasureValued(2, coupled=True),
    "mvd-uncoupled": lambda: sg.MeasureValued(2, coupled=False),
    "mvd-shared": lambda: sg.MeasureValued(2, coupled=True, shared_base=True),
    "mvd-shared-uncoupled": lambda: sg.MeasureValued(2, coupled=False, shared_base=True),
    "pathwise": lambda: sg.Pathwise(8),
}
EXTRA = ("sf-antithetic-optimal", "mvd-shared-uncoupled")


def supported(problem: Problem, param: str, estimator: str) -> bool:
    """Whether the library claims (family, param, estimator) works; the tests check the claim both ways."""
    cls = type(problem.dist())
    if estimator in registry.estimator_names():
        return registry.get_spec(estimator).supports(cls, param)
    if estimator.startswith("sf"):
        return param in cls.score_params and ("antithetic" not in estimator or cls.symmetric)
    if estimator.startswith("mvd"):
        return sg.distributions.find_weak_derivative(cls, param) is not None
    return param in cls.reparam_params


def _budget(name: str, dist: sg.Family, param: str) -> int:
    """The smallest budget the estimator can use, and at least 8 (the z-test needs no more, and it keeps the
    hundreds of cases fast)."""
    return max(8, registry.minimum_budget(name, dist, (param,)))


def _registry_cases(name: str, problem: Problem, param: str) -> list[Case]:
    """The cases of registered estimator ``name``: one, or for a stateful estimator (one with running
    statistics) its first estimate and the one after a warm-up of 2 (which then decides from history)."""
    dist = problem.dist()
    budget = _budget(name, dist, param)

    def make() -> sg.Estimator:
        return registry.make_estimator(name, budget, dist, (param,))

    est = make()
    factor = 1.0
    if registry.get_spec(name).biased:
        if name not in BIAS_FACTORS:
            return []          # no closed-form expectation (ARS's top b): tests/estimators/test_ars.py shows it is biased
        factor = BIAS_FACTORS[name](est)
    warmups = (0, 2) if hasattr(est, "state_dict") else (0,)
    return [Case(problem.name, param, name, make, w, factor) for w in warmups]


#: The documented expectation of each estimator the registry marks biased, as a fraction of the gradient.
BIAS_FACTORS: dict[str, Callable[[sg.Estimator], float]] = {
    "sf-mean": lambda est: (est.n_samples - 1) / est.n_samples,
}

CASES: list[Case] = [
    case for name, prob in PROBLEMS.items() for param in prob.params
    for est in registry.estimator_names() if supported(prob, param, est)
    for case in _registry_cases(est, prob, param)
] + [
    Case(name, param, est, ESTIMATORS[est])
    for name, prob in PROBLEMS.items() for param in prob.params for est in EXTRA if supported(prob, param, est)
]
UNSUPPORTED: list[Case] = [
    Case(name, param, est, (lambda est=est, prob=prob, param=param:
                            registry.make_estimator(est, 40, prob.dist(), (param,))))
    for name, prob in PROBLEMS.items() for param in prob.params for est in registry.estimator_names()
    if not supported(prob, param, est)
] + [
    Case(name, param, est, ESTIMATORS[est])
    for name, prob in PROBLEMS.items() for param in prob.params for est in EXTRA if not supported(prob, param, est)
]


def repeated_estimates(case: Case, repeats: int, seed: int = 0, estimator: sg.Estimator | None = None) -> Tensor:
    """``repeats`` independent estimates of d E f / d param, ``[repeats, *param_shape]``, in one vectorised
    call (the repeats are independent copies in the batch), after ``case.warmup`` estimates on the same copies."""
    prob = PROBLEMS[case.problem]
    dist = prob.dist(copies=repeats)
    est = estimator or case.make()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(case.warmup):
        est.estimate(prob.f, dist, generator=gen, params=(case.param,))
    g = est.estimate(prob.f, dist, generator=gen, params=(case.param,))
    return g.grad[case.param]


@dataclass
class ZTest:
    z: Tensor            # per component
    mean: Tensor
    se: Tensor
    exact: Tensor

    @property
    def max_abs_z(self) -> float:
        return float(self.z.abs().max())


def z_test(estimates: Tensor, exact: Tensor) -> ZTest:
    """Per-component z-scores of the mean of repeated estimates against the exact value. Components that
    were estimated without any noise (standard error 0) must match to rounding, else z is infinite."""
    mean = estimates.mean(0)
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    diff = mean - exact
    tol = 1e-9 * (1 + exact.abs())
    z = torch.where(se > 0, diff / se.clamp_min(1e-300),
                    torch.where(diff.abs() <= tol, torch.zeros_like(diff), torch.full_like(diff, math.inf)))
    return ZTest(z, mean, se, exact)


#: With fixed seeds this is deterministic; the threshold makes a false alarm on a correct estimator
#: negligible (two-sided p ≈ 5.7e-7 per component) while a 20% bias is still far beyond it at our repeats.
Z_THRESHOLD = 5.0
