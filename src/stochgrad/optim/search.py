"""An ask/tell search-gradient optimiser over a factorised Normal search distribution.

Each step: ``points = opt.ask()`` (the points one gradient estimate needs), evaluate f on them anywhere,
``opt.tell(values)``: the estimate of ∇ E f under N(loc, scale²) goes to a ``torch.optim`` optimiser that
moves ``loc`` (and ``log scale`` if ``learn_scale``). Any estimator of the library works; the evaluations per
step are the estimator's budget.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from stochgrad.distributions.normal import Normal
from stochgrad.errors import InvalidArgumentError, StochgradError
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan, check_values
from stochgrad.estimators.registry import make_estimator, minimum_budget
from stochgrad.optim.shaping import SHAPINGS

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


def snes_popsize(dim: int) -> int:
    """SNES's population λ = 4 + ⌊3 ln D⌋ (Schaul et al. 2011), rounded up to even for antithetic pairs."""
    lam = 4 + int(3 * math.log(dim))
    return lam + lam % 2


class DivergenceError(StochgradError):
    """A step would have made the search distribution's mean or scale non-finite (the optimiser is unchanged)."""


class AskTellError(StochgradError):
    """``tell`` was called without a pending ``ask``, or ``ask`` twice without ``tell``."""


class SearchGradient:
    """Minimise (or maximise) a black-box f by following estimated gradients of E_{x~N(loc, scale²)} f(x).

    Args:
      x0: initial mean ``[D]``.
      sigma0: initial standard deviation (a float, or ``[D]``), > 0.
      estimator: an :class:`~stochgrad.Estimator`, or a registry name (``"auto"``, ``"mvd"``,
        ``"sf-antithetic"``, …) sized to ``popsize`` evaluations per step.
      popsize: evaluations of f per step when ``estimator`` is a name (default: with ``"natural"`` steps SNES's
        λ = 4 + ⌊3 ln D⌋ made even, otherwise 2·D per learned parameter and at least 8; never below what the
        estimator needs, e.g. 2·D for coupled MVD).
      optimizer: ``"adam"``, ``"sgd"``, ``"natural"``, or a callable ``params -> torch.optim.Optimizer``.
        ``"natural"`` follows the natural gradient of the Gaussian (Fisher diag(1/σ²) for loc, 2 for log σ):
        Δloc = −lr·σ²·ĝ_loc, Δlog σ = −scale_lr·σ·ĝ_σ/2, which learns the scale and is invariant to the
        problem's scale; with centred ranks and the score function it is SNES (Schaul et al. 2011), with MVD
        its measure-valued counterpart. Defaults then: lr = 1, scale_lr = (3 + ln D)/(5√D).
      lr: learning rate of the optimiser (default: ``sigma0``; 1 for ``"natural"``).
      learn_scale: also learn log(scale) from the scale gradient (with ``scale_lr``, default ``lr/σ0 · 0.1``
        in log space); otherwise scale follows ``sigma_decay``.
      sigma_decay: multiplies the scale after each step when it is not learned (1 keeps it fixed).
      lr_decay: multiplies the learning rate after each step (1 keeps it fixed); Adam's steps do not shrink
        with the gradient, so a decaying scale usually wants a decaying learning rate too.
      min_sigma: the scale never goes below this.
      fitness_shaping: ``"none"`` or ``"centered-ranks"`` (see :mod:`stochgrad.optim.shaping`).
      maximize: maximise f instead.
      seed: seeds the generator behind every random number.

    Example::

        opt = SearchGradient(torch.zeros(10), 0.3, estimator="auto")
        for _ in range(100):
            x = opt.ask()
            opt.tell(f(x))
        opt.loc, opt.best_f
    """

    def __init__(self, x0: Tensor, sigma0: float | Tensor, estimator: Estimator | str = "auto",
                 popsize: int | None = None, optimizer: str | Callable = "adam", lr: float | None = None,
                 learn_scale: bool = False, scale_lr: float | None = None, sigma_decay: float = 1.0,
                 lr_decay: float = 1.0, min_sigma: float = 1e-12, fitness_shaping: str = "none", maximize: bool = False,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        x0 = torch.as_tensor(x0, dtype=dtype).detach().clone()
        if x0.dim() != 1 or x0.numel() == 0:
            raise InvalidArgumentError(f"x0: need a non-empty vector [D]; got shape {list(x0.shape)}")
        if not bool(torch.isfinite(x0).all()):
            raise InvalidArgumentError("x0: must be finite")
        sigma = torch.as_tensor(sigma0, dtype=dtype).detach().clone().expand_as(x0).clone()
        if not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
            raise InvalidArgumentError(f"sigma0: must be positive and finite; got {sigma0!r}")
        if fitness_shaping not in SHAPINGS:
            raise InvalidArgumentError(f"fitness_shaping: got {fitness_shaping!r}; choose one of {list(SHAPINGS)}")
        if not 0 < sigma_decay <= 1:
            raise InvalidArgumentError(f"sigma_decay: must be in (0, 1]; got {sigma_decay}")
        if not 0 < lr_decay <= 1:
            raise InvalidArgumentError(f"lr_decay: must be in (0, 1]; got {lr_decay}")
        self.lr_decay = lr_decay
        self.dim = x0.numel()
        self.natural = optimizer == "natural"
        if self.natural:
            learn_scale = True
            lr = 1.0 if lr is None else lr
            scale_lr = (3 + math.log(self.dim)) / (5 * math.sqrt(self.dim)) if scale_lr is None else scale_lr
        self.loc = x0.requires_grad_(True)
        self.log_scale = sigma.log().requires_grad_(learn_scale)
        self.learn_scale, self.sigma_decay, self.min_sigma = learn_scale, sigma_decay, min_sigma
        self.fitness_shaping, self.maximize = fitness_shaping, maximize
        self.params = ("loc", "scale") if learn_scale else ("loc",)
        if popsize is None:
            popsize = snes_popsize(self.dim) if self.natural else max(8, 2 * self.dim * len(self.params))
            if isinstance(estimator, str):              # at least what the estimator needs (MVD: 2 per component)
                popsize = max(popsize, minimum_budget(estimator, self.distribution_at(x0, sigma), self.params))
        self.popsize = popsize
        if isinstance(estimator, str):
            self.estimator_name = estimator
            estimator = make_estimator(estimator, self.popsize, self.distribution(), self.params)
        else:
            self.estimator_name = type(estimator).__name__
        self.estimator = estimator
        lr = float(sigma.mean()) if lr is None else lr
        if not lr > 0:
            raise InvalidArgumentError(f"lr: must be > 0; got {lr}")
        groups = [{"params": [self.loc], "lr": lr}]
        if learn_scale:
            groups.append({"params": [self.log_scale], "lr": scale_lr if scale_lr is not None else 0.1 * lr /
                           float(sigma.mean())})
        if self.natural:
            self.optimizer = torch.optim.SGD(groups)
        elif isinstance(optimizer, str):
            if optimizer not in OPTIMIZERS:
                raise InvalidArgumentError(f"optimizer: got {optimizer!r}; choose one of {[*OPTIMIZERS, 'natural']} or "
                                           "pass a callable params -> torch.optim.Optimizer")
            self.optimizer = OPTIMIZERS[optimizer](groups)
        else:
            self.optimizer = optimizer(groups)
        self.generator = torch.Generator().manual_seed(seed)
        self.n_evals = 0
        self.n_steps = 0
        self.best_f = -math.inf if maximize else math.inf
        self.best_x = x0.detach().clone()
        self._pending: Plan | None = None

    # -- the search distribution --------------------------------------------------------------------------
    @property
    def scale(self) -> Tensor:
        return self.log_scale.detach().exp().clamp_min(self.min_sigma)

    def distribution(self) -> Normal:
        return Normal(self.loc.detach(), self.scale)

    @staticmethod
    def distribution_at(x0: Tensor, sigma: Tensor) -> Normal:
        """The search distribution N(x0, sigma²) before the optimiser exists (to size the estimator)."""
        return Normal(x0.detach(), sigma)

    # -- ask / tell ---------------------------------------------------------------------------------------
    def next_evals(self) -> int:
        """Evaluations the next ``ask`` will request (without drawing anything)."""
        return self.estimator.n_evals(self.distribution(), self.params)

    def ask(self) -> Tensor:
        """The points to evaluate next, ``[n, D]`` (n = the estimator's evaluations per step)."""
        if self._pending is not None:
            raise AskTellError("ask: the previous points were not told yet; call tell(values) first")
        self._pending = self.estimator.plan(self.distribution(), self.generator, self.params)
        return self._pending.points.detach()

    def tell(self, values: Tensor) -> GradientEstimate:
        """Give f at the points of the last ``ask`` (``[n]``) and take one optimiser step.

        Raises (and leaves the optimiser exactly as it was, the points still pending):
          AskTellError: no pending ``ask``.
          EvaluationError: wrong number of values, NaN or infinite values (naming the points).
          DivergenceError: the step would make loc or scale infinite.
        """
        if self._pending is None:
            raise AskTellError("tell: there are no pending points; call ask() first")
        plan = self._pending
        raw, seen = self._as_the_estimator_sees(values)
        g = plan.combine(seen)
        self._pending = None
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.scale
        g_loc = g.grad["loc"].to(self.loc.dtype)
        self.loc.grad = (scale * scale * g_loc) if self.natural else g_loc.clone()
        if self.learn_scale:
            g_log = (g.grad["scale"] * scale).to(self.log_scale.dtype)      # chain rule: ∂/∂log σ = σ ∂/∂σ
            self.log_scale.grad = 0.5 * g_log if self.natural else g_log
        before = self.loc.detach().clone(), self.log_scale.detach().clone()
        self.optimizer.step()
        if not (bool(torch.isfinite(self.loc).all()) and bool(torch.isfinite(self.log_scale.detach().exp()).all())):
            with torch.no_grad():
                self.loc.copy_(before[0])
                self.log_scale.copy_(before[1])
            self._pending = plan
            shaping = ("; unshaped values make natural steps scale with f: use fitness_shaping='centered-ranks'"
                       if self.natural and self.fitness_shaping == "none" else "")
            raise DivergenceError(f"tell: the step made the search distribution's loc or scale infinite (gradient "
                                  f"norm {float(g_loc.norm()):.3g}){shaping}, or use a smaller lr; the optimiser "
                                  "is left as it was before this tell")
        self.estimator.update(g)          # the estimator's one explicit state step (running statistics)
        with torch.no_grad():
            if not self.learn_scale and self.sigma_decay < 1:
                self.log_scale.add_(math.log(self.sigma_decay))
            self.log_scale.clamp_(min=math.log(self.min_sigma))
        if self.lr_decay < 1:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr_decay
        self.n_evals += g.n_evals
        self.n_steps += 1
        i = int(raw.argmax() if self.maximize else raw.argmin())
        if (float(raw[i]) > self.best_f) if self.maximize else (float(raw[i]) < self.best_f):
            self.best_f = float(raw[i])
            self.best_x = plan.points.detach()[i].to(self.loc.dtype).clone()
        return g

    def used(self, values: Tensor) -> Tensor | None:
        """Mask ``[n]`` of the pending points whose values the next ``tell(values)`` uses (ARS: its top-b
        pairs), or None when it uses all; changes nothing."""
        if self._pending is None:
            raise AskTellError("used: there are no pending points; call ask() first")
        return self._pending.used(self._as_the_estimator_sees(values)[1])

    def _as_the_estimator_sees(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """The checked values ``[n]`` and what the estimator receives: shaped, negated when maximising."""
        plan = self._pending
        raw = check_values(values, plan.points, plan.dist.batch_shape).detach()
        shaped = raw if self.fitness_shaping == "none" else SHAPINGS[self.fitness_shaping](raw)
        return raw, (-shaped if self.maximize else shaped)

    # -- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors and numbers only; take it after ``tell``)."""
        if self._pending is not None:
            raise AskTellError("state_dict: points are pending; take checkpoints after tell()")
        est_state = self.estimator.state_dict() if hasattr(self.estimator, "state_dict") else {}
        return {"loc": self.loc.detach().clone(), "log_scale": self.log_scale.detach().clone(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "generator": self.generator.get_state(),
                "estimator": est_state, "n_evals": self.n_evals, "n_steps": self.n_steps,
                "best_f": self.best_f, "best_x": self.best_x.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.loc.copy_(state["loc"])
            self.log_scale.copy_(state["log_scale"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.generator.set_state(state["generator"])
        if hasattr(self.estimator, "load_state_dict") and state["estimator"]:
            self.estimator.load_state_dict(state["estimator"])
        self.n_evals, self.n_steps = int(state["n_evals"]), int(state["n_steps"])
        self.best_f, self.best_x = float(state["best_f"]), state["best_x"].clone()
        self._pending = None
