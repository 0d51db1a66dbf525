"""An ask/tell optimiser in two stages: the quasi-Newton search until it has converged once, then SNES-style
natural-gradient steps from the best point found.

Why: the quasi-Newton search (:mod:`stochgrad.optim.quasi_newton`) needs far fewer evaluations where f is smooth
at the scale of its steps, and handles additive noise; on rugged, multimodal f (Rastrigin, Ackley) its finite
differences converge to the nearest local minimum within a few hundred evaluations, where natural-gradient steps
over a population (:class:`~stochgrad.optim.search.SearchGradient` with ``optimizer="natural"``) smooth over the
ripples. The switch is the quasi-Newton search's own local-convergence test (the event that would make it
restart: a line search that fails at σ's floor, or ``patience`` iterations without improvement), so a smooth f
is solved before any evaluation goes to the second stage.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from stochgrad.optim.quasi_newton import QuasiNewtonSearch
from stochgrad.optim.search import SearchGradient

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
      stage: 1 (quasi-Newton) or 2 (natural steps); ``switched_at``: evaluations when the stage changed.
    """

    estimator_name = "ball-orthogonal, then sf-antithetic"

    def __init__(self, x0: Tensor, sigma0: float | Tensor, maximize: bool = False, seed: int = 0,
                 **quasi_newton: Any) -> None:
        self.first = QuasiNewtonSearch(x0, sigma0, maximize=maximize, seed=seed, **quasi_newton)
        self.sigma0 = self.first.sigma0
        self.maximize, self.seed = maximize, seed
        self.second: SearchGradient | None = None
        self.switched_at: int | None = None
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
        return self.first.n_evals + (0 if self.second is None else self.second.n_evals)

    @property
    def n_steps(self) -> int:
        return self.first.n_steps + (0 if self.second is None else self.second.n_steps)

    @property
    def best_f(self) -> float:
        if self.second is None:
            return self.first.best_f
        pick = max if self.maximize else min
        return pick(self.first.best_f, self.second.best_f)

    @property
    def best_x(self) -> Tensor:
        if self.second is None or self.best_f == self.first.best_f:
            return self.first.best_x
        return self.second.best_x

    def next_evals(self) -> int:
        return self.active.next_evals()

    def first_step_evals(self) -> int:
        """Evaluations before the first step can be taken (the quasi-Newton search's)."""
        return self.first.first_step_evals()

    def ask(self) -> Tensor:
        """The points to evaluate next, ``[n, D]``."""
        return self.active.ask()

    def tell(self, values: Tensor) -> None:
        """f at the points of the last ``ask``; switches to the second stage once the first has converged."""
        self.active.tell(values)
        if self.second is None and self.first.restarts > 0:
            self._switch()

    def _switch(self) -> None:
        self.switched_at = self.first.n_evals
        self.second = SearchGradient(self.first.best_x, self.sigma0, maximize=self.maximize, seed=self.seed + 1,
                                     dtype=self.first.dtype, **SECOND_STAGE)
        self.popsize = self.second.popsize

    def state_dict(self) -> dict[str, Any]:
        """Both stages' states (take it after ``tell``)."""
        return {"first": self.first.state_dict(), "switched_at": self.switched_at,
                "second": None if self.second is None else self.second.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first.load_state_dict(state["first"])
        self.second, self.switched_at = None, None
        if state["second"] is not None:
            self._switch()
            self.second.load_state_dict(state["second"])
        self.switched_at = state["switched_at"]

    def __repr__(self) -> str:
        where = "quasi-Newton" if self.second is None else f"natural steps since evaluation {self.switched_at}"
        best = self.best_f if math.isfinite(self.best_f) else math.nan
        return f"StagedSearch(stage {self.stage}: {where}, best {best:.6g}, {self.n_evals} evaluations)"

