"""The library's own black-box estimators over a random subspace of the weights: θ = θ0 + P·z, z ∈ R^k.

P is a fixed random map from R^k to the trainable tensors, never stored: the block of tensor i is a
``[numel_i, k]`` matrix with entries N(0, 1/k), drawn column by column from a generator seeded with
(subspace seed, i) (:func:`~stochgrad.rlhf.es.noise.tensor_seed`), so a coordinate's displacement by z ~ N(μ, s²I)
has standard deviation s around θ0 + P·μ, as σ means for ``--estimator es``. The search distribution is
``stochgrad.Normal(loc=μ, scale=σ)`` over z, and any registered estimator (``sf-antithetic``, ``sf-loo``, ``auto``,
…) estimates ∇_μ E_z F(θ0 + P·z) through the same ``plan``/``combine`` as everywhere else: its points are the
members, F their fitness. The optimiser steps μ (k numbers); the model's weights are then set to θ0 + P·μ.
Members are evaluated without writing the weights, as for ES.

Cost: forming a member's tensors takes k normal draws per parameter (P is regenerated, one tensor-sized buffer at
a time), so k should stay small (tens) for large models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.distributions.normal import Normal
from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan
from stochgrad.estimators.registry import estimator_names, get_spec, make_estimator
from stochgrad.rlhf.es.noise import splitmix64, tensor_seed
from stochgrad.rlhf.es.update import SHAPINGS

#: Registered estimators that need a differentiable f (the fitness of a sampled text is a black box).
NOT_BLACK_BOX = ("pathwise",)


def subspace_estimators() -> list[str]:
    """The registered estimators that can run over the subspace (black-box ones that estimate a Normal's loc)."""
    return [n for n in estimator_names() if n not in NOT_BLACK_BOX and get_spec(n).supports(Normal, "loc")]


def build(name: str, population: int, dist: Normal) -> Estimator:
    """The registry's estimator ``name`` for ``population`` evaluations over ``dist``'s loc; it must use them all.

    Raises:
      InvalidArgumentError: naming ``subspace_estimator`` (unknown, or not a black-box estimator of a loc).
      BudgetError: naming ``population`` (below the estimator's minimum, or not all of it used).
    """
    names = subspace_estimators()
    if name not in names:
        raise InvalidArgumentError(f"subspace_estimator: got {name!r}; choose a black-box estimator of a "
                                   f"Normal's loc: {', '.join(names)}")
    if not isinstance(population, int) or isinstance(population, bool) or population < 1:
        raise BudgetError(f"population: need an integer >= 1 of evaluations per estimate; got {population!r}")
    k = dist.loc.shape[-1]
    try:
        est = make_estimator(name, population, dist, ("loc",))
    except BudgetError as exc:
        raise BudgetError("population: " + str(exc).removeprefix("budget: ")) from None
    used = est.n_evals(dist, ("loc",))
    if used != population:
        raise BudgetError(f"population: {name} uses {used} of {population} evaluations per estimate over a "
                          f"{k}-dimensional subspace; give {used}")
    return est


def check(name: str, population: int, dim: int, sigma: float) -> None:
    """Every check of :class:`SubspaceSearch`'s arguments, without a model (for a config's ``validate``)."""
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise InvalidArgumentError(f"subspace_dim: need an integer k >= 1; got {dim!r}")
    if not (sigma > 0) or sigma == float("inf"):
        raise InvalidArgumentError(f"sigma: need a finite scale > 0 of the search distribution over z; got {sigma!r}")
    build(name, population, Normal(torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64)))


class Subspace:
    """The map z ↦ P·z onto tensors of the given shapes, P regenerated from ``seed`` whenever it is used.

    Args:
      shapes: the trainable tensors' shapes, in a fixed order.
      dim: k ≥ 1.
      seed: the subspace's seed (fixed for a run).
      device: where P is drawn.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], dim: int, seed: int, device: torch.device | str = "cpu"):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InvalidArgumentError(f"subspace_dim: need an integer k >= 1; got {dim!r}")
        self.shapes = [torch.Size(s) for s in shapes]
        self.dim, self.seed, self.device = dim, int(seed), torch.device(device)

    def displacement(self, index: int, z: Tensor) -> Tensor:
        """P_i·z, fp32 shaped like tensor ``index``: Σ_j z_j·P_ij with columns P_ij ~ N(0, I/k)."""
        gen = torch.Generator(device=self.device).manual_seed(tensor_seed(self.seed, index))
        acc = torch.zeros(self.shapes[index], dtype=torch.float32, device=self.device)
        for zj in z.tolist():
            acc.add_(torch.randn(self.shapes[index], generator=gen, device=self.device), alpha=zj)
        return acc.mul_(self.dim ** -0.5)

    def matrix(self) -> Tensor:
        """P as a dense float64 ``[D, k]`` matrix (for tests on small problems)."""
        cols = []
        for j in range(self.dim):
            e = torch.zeros(self.dim, dtype=torch.float64)
            e[j] = 1.0
            cols.append(torch.cat([self.displacement(i, e).flatten() for i in range(len(self.shapes))]))
        return torch.stack(cols, 1).double()


class SubspaceSearch:
    """A registered estimator over z for θ = θ0 + P·z (see the module docstring).

    Args:
      theta0: the tensors at z = 0 (copied).
      dim: k.
      sigma: the scale s of the search distribution N(μ, s²I) over z.
      estimator: a name from :func:`subspace_estimators`.
      population: evaluations of F per estimate (the estimator's budget; it must use all of them).
      seed: the subspace's seed.

    Raises:
      InvalidArgumentError / BudgetError: naming ``subspace_estimator``, ``population``, ``sigma`` or
        ``subspace_dim``.

    Example::

        search = SubspaceSearch([torch.zeros(3, 2)], dim=4, sigma=0.1, estimator="sf-antithetic", population=8,
                                seed=0)
        plan = search.plan(torch.Generator().manual_seed(0))
        fitness = torch.stack([search.values(z)[0].sum() for z in plan.points])
        direction, g = search.combine(plan, fitness)      # ∇_μ E F, [4]
    """

    def __init__(self, theta0: Sequence[Tensor], dim: int, sigma: float, estimator: str, population: int,
                 seed: int) -> None:
        check(estimator, population, dim, sigma)
        self.theta0 = [t.detach().clone() for t in theta0]
        self.subspace = Subspace([t.shape for t in theta0], dim, splitmix64(seed) & 0xFFFFFFFF,
                                 self.theta0[0].device)
        self.sigma = float(sigma)
        self.loc = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
        self.estimator: Estimator = build(estimator, population, self.distribution())
        self.name, self.population = estimator, population

    def distribution(self) -> Normal:
        """N(μ, σ²I) over z (μ detached)."""
        return Normal(self.loc.detach().clone(), torch.full_like(self.loc.detach(), self.sigma))

    def plan(self, generator: torch.Generator) -> Plan:
        """The estimator's plan: ``plan.points [population, k]`` are the members' z."""
        return self.estimator.plan(self.distribution(), generator, ("loc",))

    def values(self, z: Tensor) -> list[Tensor]:
        """The tensors θ0 + P·z (computed in fp32, in each tensor's dtype); θ0 untouched."""
        return [(t.float() + self.subspace.displacement(i, z)).to(t.dtype) for i, t in enumerate(self.theta0)]

    def combine(self, plan: Plan, fitness: Tensor) -> tuple[Tensor, GradientEstimate]:
        """The ascent direction ``[k]`` for E F from the members' fitness ``[population]`` (pure).

        The estimator sees −F, values to minimise, as everywhere in the library (ARS keeps its best = smallest
        pairs), and the direction is −(its gradient). Returns the direction and the estimate of ∇ E(−F), which
        :meth:`update` folds into a stateful estimator's statistics (Auto).
        """
        g = plan.combine(-fitness.to(torch.float64))
        return -g.grad["loc"], g

    def update(self, estimate: GradientEstimate) -> None:
        """The estimator's one state step (after a step is taken; a no-op for stateless estimators)."""
        self.estimator.update(estimate)

    def state_dict(self) -> dict:
        return {"loc": self.loc.detach().clone(), "estimator": self.estimator.state_dict()
                if hasattr(self.estimator, "state_dict") else {}}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.loc.copy_(state["loc"])
        if hasattr(self.estimator, "load_state_dict") and state.get("estimator"):
            self.estimator.load_state_dict(state["estimator"])


@dataclass(frozen=True)
class SubspaceConfig:
    """The choices of ``--estimator subspace``.

    Attributes:
      population: evaluations of the fitness per estimate (members).
      sigma: the scale of N(μ, σ²I) over z.
      dim: k.
      estimator: the registered estimator over z.
      shaping: fitness shaping per population (one of :data:`~stochgrad.rlhf.es.update.SHAPINGS`), before the
        estimator sees the values.
      beta: KL coefficient in the fitness.
    """

    population: int = 8
    sigma: float = 1e-3
    dim: int = 16
    estimator: str = "sf-antithetic"
    shaping: str = "centred-ranks"
    beta: float = 0.0
    std_eps: float = 1e-8

    def validate(self) -> SubspaceConfig:
        check(self.estimator, self.population, self.dim, self.sigma)
        if self.shaping not in SHAPINGS:
            raise InvalidArgumentError(f"es_shaping: got {self.shaping!r}; choose one of {list(SHAPINGS)}")
        if not (self.beta >= 0):
            raise InvalidArgumentError(f"beta: need a KL coefficient >= 0; got {self.beta!r}")
        return self

    def describe(self) -> str:
        return (f"{self.estimator} over a {self.dim}-dimensional subspace, population={self.population} "
                f"σ={self.sigma:g} {self.shaping} β={self.beta:g}")
