"""An ask/tell optimiser in two stages: the quasi-Newton search until it has converged once, then SNES-style
natural-gradient steps from the best point found, restarted with a doubled population whenever they stall
(as IPOP-CMA-ES restarts CMA-ES).

Why: the quasi-Newton search (:mod:`stochgrad.optim.quasi_newton`) needs far fewer evaluations where f is smooth
at the scale of its steps, and handles additive noise; on rugged, multimodal f (Rastrigin, Ackley) its finite
differences converge to the nearest local minimum within a few hundred evaluations, where natural-gradient steps
over a population (:class:`~stochgrad.optim.search.SearchGradient` with ``optimizer="natural"``) smooth over the
ripples. The switch is the quasi-Newton search's own local-convergence test (the event that would make it
restart: a line search that fails at σ's floor, or ``patience`` iterations without improvement), so a smooth f
is solved before any evaluation goes to the second stage. The second stage has converged when the best values of
its last 10 + ⌈30·D/λ⌉ steps lie within a relative 10⁻¹² of each other (CMA-ES's ``tolhistfun``) or its mean
σ fell below 10⁻¹²·σ₀ (``tolx``); it then restarts at x₀ + σ₀·z (z ~ N(0, I)) with σ₀ and twice the
population: larger populations smooth over larger ripples.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from stochgrad.optim.quasi_newton import QuasiNewtonSearch
from stochgrad.optim.search import SearchGradient, snes_popsize

#: The second stage's settings (SNES: the antithetic score function, natural steps, centred ranks, SNES's λ).
SECOND_STAGE: dict = {"estimator": "sf-antithetic", "optimizer": "natural", "fitness_shaping": "centered-ranks"}


class StagedSearch:
    """Quasi-Newton search, then natural-gradient steps.

    Args:
      x0: initial point ``[D]``.
      sigma0: the quasi-Newton search's initial radius and the second stage's initial search scale.
      maximize: maximise f instead.
      seed: seeds both stages.
      **quasi_newton: options of :class:`QuasiNewtonSearch` (directions, differences, memory, ...).

    Attributes:
      stage: 1 (quasi-Newton) or 2 (natural steps); ``switched_at``: evaluations when the stage changed;
      restarts: restarts of the second stage so far (its population is SNES's λ · 2^restarts).
    """

    estimator_name = "ball-orthogonal, then sf-antithetic"

    def __init__(self, x0: Tensor, sigma0: float | Tensor, maximize: bool = False, seed: int = 0,
                 **quasi_newton: Any) -> None:
        self.first = QuasiNewtonSearch(x0, sigma0, maximize=maximize, seed=seed, **quasi_newton)
        self.sigma0 = self.first.sigma0
        self.maximize, self.seed = maximize, seed
        self.second: SearchGradient | None = None
        self.switched_at: int | None = None
        self.restarts = 0
        self.done_evals = self.done_steps = 0          # of the second stage's earlier runs
        self.done_best: tuple[float, Tensor] | None = None
        self.step_bests: list[float] = []               # of the second stage's current run, newest last
        self.popsize = self.first.popsize

    @property
    def stage(self) -> int:
        return 1 if self.second is None else 2

    @property
    def active(self) -> QuasiNewtonSearch | SearchGradient:
        return self.first if self.second is None else self.second

    @property
    def loc(self) -> Tensor:
        return self.active.loc

    @property
    def scale(self) -> Tensor:
        return self.active.scale

    @property
    def n_evals(self) -> int:
        return self.first.n_evals + self.done_evals + (0 if self.second is None else self.second.n_evals)

    @property
    def n_steps(self) -> int:
        return self.first.n_steps + self.done_steps + (0 if self.second is None else self.second.n_steps)

    def _candidates(self) -> list[tuple[float, Tensor]]:
        out = [(self.first.best_f, self.first.best_x)]
        if self.done_best is not None:
            out.append(self.done_best)
        if self.second is not None:
            out.append((self.second.best_f, self.second.best_x))
        return out

    @property
    def best_f(self) -> float:
        return self._best()[0]

    @property
    def best_x(self) -> Tensor:
        return self._best()[1]

    def _best(self) -> tuple[float, Tensor]:
        pick = max if self.maximize else min
        return pick(self._candidates(), key=lambda c: c[0])

    def next_evals(self) -> int:
        return self.active.next_evals()

    def first_step_evals(self) -> int:
        """Evaluations before the first step can be taken (the quasi-Newton search's)."""
        return self.first.first_step_evals()

    def ask(self) -> Tensor:
        """The points to evaluate next, ``[n, D]``."""
        return self.active.ask()

    def tell(self, values: Tensor) -> None:
        """f at the points of the last ``ask``; switches to the second stage once the first has converged, and
        restarts the second when it stalls."""
        self.active.tell(values)
        if self.second is None:
            if self.first.restarts > 0:
                self.switched_at = self.first.n_evals
                self._start_second(self.first.best_x, 0)
            return
        raw = torch.as_tensor(values, dtype=torch.float64)
        horizon = 10 + math.ceil(30 * self.first.dim / self.second.popsize)
        self.step_bests = [*self.step_bests, float(raw.max() if self.maximize else raw.min())][-horizon:]
        flat = (len(self.step_bests) == horizon and
                max(self.step_bests) - min(self.step_bests) <= 1e-12 * max(1.0, abs(min(self.step_bests))))
        if flat or float(self.second.scale.mean()) < 1e-12 * self.sigma0:
            self._restart_second()

    def _second(self, x0: Tensor, restarts: int) -> SearchGradient:
        popsize = snes_popsize(self.first.dim) * 2 ** restarts
        return SearchGradient(x0, self.sigma0, popsize=popsize, maximize=self.maximize, seed=self.seed + 1 + restarts,
                              dtype=self.first.dtype, **SECOND_STAGE)

    def _start_second(self, x0: Tensor, restarts: int) -> None:
        self.second, self.restarts = self._second(x0, restarts), restarts
        self.step_bests = []
        self.popsize = self.second.popsize

    def _restart_second(self) -> None:
        old = self.second
        self.done_evals += old.n_evals
        self.done_steps += old.n_steps
        pick = max if self.maximize else min
        self.done_best = pick([c for c in (self.done_best, (old.best_f, old.best_x)) if c is not None],
                              key=lambda c: c[0])
        z = torch.randn(self.first.dim, generator=old.generator, dtype=self.first.dtype)
        self._start_second(self.first.x0 + self.sigma0 * z, self.restarts + 1)

    def state_dict(self) -> dict[str, Any]:
        """Both stages' states (take it after ``tell``)."""
        return {"first": self.first.state_dict(), "switched_at": self.switched_at, "restarts": self.restarts,
                "done_evals": self.done_evals, "done_steps": self.done_steps, "done_best": self.done_best,
                "step_bests": list(self.step_bests),
                "second": None if self.second is None else self.second.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first.load_state_dict(state["first"])
        self.second = None
        self.popsize = self.first.popsize
        if state["second"] is not None:
            self._start_second(state["second"]["loc"], state["restarts"])
            self.second.load_state_dict(state["second"])
        self.switched_at, self.restarts = state["switched_at"], state["restarts"]
        self.done_evals, self.done_steps, self.done_best = state["done_evals"], state["done_steps"], state["done_best"]
        self.step_bests = list(state["step_bests"])

    def __repr__(self) -> str:
        where = ("quasi-Newton" if self.second is None else
                 f"natural steps since evaluation {self.switched_at}, {self.restarts} restarts")
        best = self.best_f if math.isfinite(self.best_f) else math.nan
        return f"StagedSearch(stage {self.stage}: {where}, best {best:.6g}, {self.n_evals} evaluations)"

