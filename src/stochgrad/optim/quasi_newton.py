"""An ask/tell quasi-Newton optimiser on gradients of the ball-smoothed objective, with restarts.

Each iteration at the current point x (f(x) known):

1. gradient: f at x ± σu_i for n orthonormal directions (:mod:`stochgrad.optim.ball_gradient`), m frames of
   them, gives ĝ, an unbiased estimate of ∇f_σ(x), and the curvature along each u_i; x itself is evaluated
   again with them (every iteration while f shows noise, every 10th while it repeats itself exactly), which
   gives a fresh f(x) for the curvature and the line search and one sample (f₁ − f₂)²/2 of f's noise
   (:attr:`QuasiNewtonSearch.noise`);
2. direction: d = −H·ĝ from limited-memory BFGS (:mod:`stochgrad.optim.lbfgs`); before any pair is stored
   H = I / c̄, with c̄ the mean measured curvature (a Newton step on the average curvature), or a step of
   length σ where no positive curvature was seen;
3. line search on f itself, one evaluation per trial: backtracking until Armijo's sufficient decrease
   f(x + αd) ≤ f(x) + 10⁻⁴·α·ĝ·d + 2ε holds (relaxed by the noise, as Berahas, Byrd and Nocedal 2019) (quadratic interpolation, α shrunk by 0.1–0.5 per trial); when the first
   trial decreases f almost as a linear model predicts, α doubles while f keeps decreasing (a step that was far
   too short: linear slopes, a too-small initial γ);
4. σ follows the step and the noise: σ ← clip(max(κ‖s‖, 3√(ε/c̄)), σ_floor, σ₀) with κ = ``sigma_ratio``, so
   the finite differences shrink as the steps do, stay wide enough that f's noise ε does not swamp them
   (the forward-difference rule h ∝ √(ε/f'') of Moré and Wild 2012), and σ_floor = ``sigma_floor``·(1 + ‖x‖∞)
   keeps them above rounding;
5. sample size from the estimate's own noise (the norm test of Byrd et al. 2012): the noise variance of ĝ is
   n·ε²/(2σ²m) (each δ_i carries ε²/(2σ²)); when it exceeds θ²‖ĝ‖², θ = 1/2, the next gradient uses
   proportionally more frames m (at most ``max_frames``); when it is below a quarter of that, m halves.
   A curvature pair is stored only when ‖y‖² exceeds 4× the two gradients' noise variances;
6. restarts: when a line search fails with an empty memory at σ_floor, or the best value has not improved by a
   relative 10⁻¹² within ``patience`` iterations, the search restarts at x₀ + σ₀·2^{k/2}·z (z ~ N(0, I)), k the
   number of restarts so far, with a fresh memory and σ = σ₀.

What it needs from f: smoothness at the scale of the steps (finite differences of f along the directions carry
the gradient). It is not invariant to monotone transformations of f (CMA-ES and SNES with ranks are).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError
from stochgrad.estimators.base import check_values
from stochgrad.optim.ball_gradient import (
    antithetic_points,
    ball_gradient,
    forward_ball_gradient,
    forward_points,
    orthogonal_directions,
)
from stochgrad.optim.lbfgs import LBFGSMemory
from stochgrad.optim.search import AskTellError

ARMIJO = 1e-4


class QuasiNewtonSearch:
    """Minimise (or maximise) a black-box f by L-BFGS on ball-smoothed gradients with a line search on f.

    Args:
      x0: initial point ``[D]``.
      sigma0: initial smoothing radius and restart scale, > 0 (the scale of the region to search).
      directions: directions per frame, 1..D (default D: exact for quadratics; fewer make ĝ an unbiased
        but noisy estimate with variance (D/n − 1)‖∇f‖² on linear f).
      differences: ``"central"`` (2 evaluations per direction, exact for quadratics), ``"forward"`` (1, against
        f(x); error (σ/2)·Σ c_i u_i, of order σ‖∇²f‖), or ``"adaptive"`` (default): forward while that error,
        predicted from the curvatures c_i of the last central gradient, is below 0.1% of ‖ĝ‖ and f shows no
        noise (forward differences carry 4× the noise variance at half the evaluations), central otherwise and
        on every 10th gradient (to refresh the c_i).
      memory: L-BFGS pairs kept.
      sigma_ratio: κ, σ after a step is at least κ times its length (within [σ_floor, σ₀]).
      sigma_floor: relative floor of σ (times 1 + ‖x‖∞).
      max_trials: line-search trials before the search counts as failed.
      patience: iterations without relative improvement 10⁻¹² of the best value before a restart.
      max_frames: the most frames of directions one gradient may use when f is noisy.
      maximize: maximise f instead.
      seed: seeds the directions and the restart points.

    ``ask()`` returns the next points (x for a start, 1 for a line-search trial, m·2n + 1 for a gradient with its
    re-evaluation of x), ``tell(values)`` takes f at them. Misuse raises :class:`AskTellError` or an
    ``EvaluationError`` (NaN or infinite values) and leaves the optimiser unchanged.
    """

    estimator_name = "ball-orthogonal"
    NORM_TEST = 0.5
    NOISE_WINDOW = 20
    FORWARD_BIAS = 1e-3

    def __init__(self, x0: Tensor, sigma0: float, directions: int | None = None, differences: str = "adaptive",
                 memory: int = 100, sigma_ratio: float = 1e-6, sigma_floor: float = 1e-9, max_trials: int = 30,
                 patience: int = 30, max_frames: int = 64, maximize: bool = False, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        x0 = torch.as_tensor(x0, dtype=dtype).detach().clone()
        if x0.dim() != 1 or x0.numel() == 0:
            raise InvalidArgumentError(f"x0: need a non-empty vector [D]; got shape {list(x0.shape)}")
        if not bool(torch.isfinite(x0).all()):
            raise InvalidArgumentError("x0: must be finite")
        if torch.is_tensor(sigma0) and sigma0.numel() > 1:
            flat = sigma0.detach().reshape(-1)
            if not bool((flat == flat[0]).all()):
                raise InvalidArgumentError(
                    f"sigma0: the quasi-Newton search takes one radius; got {flat.numel()} different scales "
                    f"(from {float(flat.min()):g} to {float(flat.max()):g}). Pass a float, or optimizer='natural' for "
                    "a scale per coordinate")
        sigma0 = float(torch.as_tensor(sigma0, dtype=dtype).reshape(-1)[0]) if torch.is_tensor(sigma0) else \
            float(sigma0)
        if not (sigma0 > 0 and math.isfinite(sigma0)):
            raise InvalidArgumentError(f"sigma0: must be positive and finite; got {sigma0!r}")
        self.dim = x0.numel()
        if differences not in ("central", "forward", "adaptive"):
            raise InvalidArgumentError(f"differences: choose 'central', 'forward' or 'adaptive'; got {differences!r}")
        directions = self.dim if directions is None else directions
        if not 1 <= directions <= self.dim:
            raise InvalidArgumentError(f"directions: need 1..D = 1..{self.dim}; got {directions}")
        for name, value in (("memory", memory), ("max_trials", max_trials), ("patience", patience),
                            ("max_frames", max_frames)):
            if not (isinstance(value, int) and value >= 1):
                raise InvalidArgumentError(f"{name}: need an integer >= 1; got {value!r}")
        if not 0 < sigma_ratio <= 1:
            raise InvalidArgumentError(f"sigma_ratio: must be in (0, 1]; got {sigma_ratio}")
        if not 0 < sigma_floor < 1:
            raise InvalidArgumentError(f"sigma_floor: must be in (0, 1); got {sigma_floor}")
        self.x0, self.sigma0, self.n_directions, self.differences = x0, sigma0, directions, differences
        self.sigma_ratio, self.sigma_floor, self.max_trials, self.patience = sigma_ratio, sigma_floor, max_trials, patience
        self.max_frames, self.maximize, self.dtype = max_frames, maximize, dtype
        self.popsize = (1 if differences == "forward" else 2) * directions + 1
        self.curvature_norm = math.inf          # ‖c‖ of the last central gradient (forward bias = σ/2 of it)
        self.since_central = 0
        self.memory = LBFGSMemory(memory)
        self.generator = torch.Generator().manual_seed(seed)
        self.n_evals = self.n_steps = self.restarts = self.n_gradients = 0
        self.best_f = -math.inf if maximize else math.inf
        self.best_x = x0.clone()
        self.mode = "central"
        self.noise_samples: list[tuple[float, float]] = []     # ((f₁ − f₂)²/2, (f₁ + f₂)/2)
        self._noise_fit: tuple[str, float] | None = None       # the fitted model of the current window
        self.frames = 1
        self._start(x0, sigma0)
        self._pending: Tensor | None = None

    # -- state -------------------------------------------------------------------------------------------
    def _start(self, x: Tensor, sigma: float) -> None:
        self.x, self.fx, self.sigma = x.clone(), math.nan, sigma
        self.phase = "center"             # "center" -> "gradient" -> "line" -> "gradient" ...
        self.g: Tensor | None = None
        self.g_prev: Tensor | None = None
        self.g_noise = self.g_noise_prev = 0.0
        self.s_prev: Tensor | None = None
        self.d: Tensor | None = None
        self.dirs: Tensor | None = None
        self.alpha = 1.0
        self.trials = 0
        self.expanding = False
        self.line_best: tuple[float, float] | None = None     # (alpha, f) of the best accepted trial
        self.mean_curvature = 0.0
        self.restart_best = math.inf
        self.since_improved = 0

    @property
    def loc(self) -> Tensor:
        return self.x

    @property
    def scale(self) -> Tensor:
        return torch.full((self.dim,), self.sigma, dtype=self.dtype)

    @property
    def noise(self) -> float:
        """ε, the estimated standard deviation of f's noise at the current point (0 when f repeats itself).

        Two models are fitted by maximum likelihood to the last samples (f₁ − f₂)²/2 ~ ε²χ²₁: additive noise
        (ε constant) and multiplicative noise (ε = ε_r·|f|, which vanishes where f does); the likelier one
        gives ε at f(x). Multiplicative noise shrinks faster than a window of samples can follow, and a
        too-large ε costs evaluations (wide differences, more frames)."""
        if self._noise_fit is None:
            self._noise_fit = self._fit_noise()
        kind, level = self._noise_fit
        return math.sqrt(level) * abs(self.fx) if kind == "multiplicative" else math.sqrt(level)

    def _fit_noise(self) -> tuple[str, float]:
        """("additive", ε²) or ("multiplicative", ε_r²) from the window of samples (refitted only when it changes)."""
        if not self.noise_samples:
            return "additive", 0.0
        s = torch.tensor([a for a, _ in self.noise_samples], dtype=torch.float64)
        if float(s.max()) == 0.0:
            return "additive", 0.0
        add = float(s.mean())
        levels = torch.tensor([b for _, b in self.noise_samples], dtype=torch.float64) ** 2
        if float(levels.min()) > 0:
            rel = float((s / levels).mean())
            # −2·log-likelihood of each model, up to the same constant: Σ log var_k + Σ s_k / var_k
            if float(torch.log(rel * levels).sum()) < len(s) * math.log(add):
                return "multiplicative", rel
        return "additive", add

    def recheck(self) -> bool:
        """Whether the next gradient evaluates x again (a noise sample)."""
        return self.noise > 0 or len(self.noise_samples) < 3 or self.n_gradients % 10 == 0

    def first_step_evals(self) -> int:
        """Evaluations before the first step can be taken: f(x₀) twice, one gradient with x again, one trial."""
        return 2 + (1 if self.differences == "forward" else 2) * self.n_directions + 1 + 1

    def next_differences(self) -> str:
        """"central" or "forward": what the next gradient uses."""
        if self.differences != "adaptive":
            return self.differences
        if self.noise > 0 or self.since_central >= 9 or self.g is None:
            return "central"
        return "forward" if 0.5 * self.sigma * self.curvature_norm < self.FORWARD_BIAS * float(self.g.norm()) else "central"

    def next_evals(self) -> int:
        if self.phase == "center":
            return 2
        if self.phase == "gradient":
            per = 2 if self.next_differences() == "central" else 1
            return self.frames * per * self.n_directions + int(self.recheck())
        return 1

    # -- ask / tell -----------------------------------------------------------------------------------
    def ask(self) -> Tensor:
        """The points to evaluate next, ``[n, D]``."""
        if self._pending is not None:
            raise AskTellError("ask: the previous points were not told yet; call tell(values) first")
        if self.phase == "center":
            points = self.x.expand(2, -1).clone()
        elif self.phase == "gradient":
            self.dirs = orthogonal_directions(self.dim, self.frames * self.n_directions, self.generator, self.dtype)
            self.mode = self.next_differences()
            make = antithetic_points if self.mode == "central" else forward_points
            points = make(self.x, self.sigma, self.dirs)
            if self.recheck():
                points = torch.cat([points, self.x[None]])
        else:
            points = (self.x + self.alpha * self.d)[None]
        self._pending = points
        return points.clone()

    def tell(self, values: Tensor) -> None:
        """f at the points of the last ``ask``; advances the iteration (see the module docstring)."""
        if self._pending is None:
            raise AskTellError("tell: there are no pending points; call ask() first")
        points = self._pending
        raw = check_values(values, points, torch.Size([])).detach().to(self.dtype)
        self._pending = None
        self.n_evals += points.shape[0]
        self.n_steps += 1
        i = int(raw.argmax() if self.maximize else raw.argmin())
        if (float(raw[i]) > self.best_f) if self.maximize else (float(raw[i]) < self.best_f):
            self.best_f, self.best_x = float(raw[i]), points[i].clone()
        v = -raw if self.maximize else raw
        if self.phase == "center":
            self._noise_sample(float(v[0]), float(v[1]))
            self.fx = float(v[1])
            self.phase = "gradient"
        elif self.phase == "gradient":
            self._gradient(v)
        else:
            self._line(float(v[0]))

    def _noise_sample(self, a: float, b: float) -> None:
        self.noise_samples.append((0.5 * (a - b) ** 2, 0.5 * (a + b)))
        del self.noise_samples[:-self.NOISE_WINDOW]
        self._noise_fit = None

    def _gradient(self, values: Tensor) -> None:
        self.n_gradients += 1
        central = self.mode == "central"
        if values.shape[0] > self.dirs.shape[0] * (2 if central else 1):
            self._noise_sample(self.fx, float(values[-1]))
            self.fx = float(values[-1])                # a fresh value at x: no selection bias from the line search
            values = values[:-1]
        if central:
            est = ball_gradient(values, self.sigma, self.dirs, self.fx)
            self.curvature_norm = float(est.curvature.norm()) * math.sqrt(self.n_directions / self.dirs.shape[0])
            self.since_central = 0
        else:
            est = forward_ball_gradient(values, self.sigma, self.dirs, self.fx)
        g = est.grad
        eps = self.noise
        n = self.dirs.shape[0]
        if not central:
            self.since_central += 1
        spread = 2.0 if central else 0.5      # δ_i's noise variance: ε²/(2σ²) or 2ε²/σ²
        self.g_noise = self.dim * self.dim / n * eps ** 2 / (spread * self.sigma ** 2)
        if self.g_prev is not None and self.s_prev is not None:
            y = g - self.g_prev
            if float(y @ y) > 4 * (self.g_noise + self.g_noise_prev):
                self.memory.add(self.s_prev, y)
        self.g = g
        gnorm2 = float(g @ g)
        if self.g_noise > self.NORM_TEST ** 2 * gnorm2:
            want = math.ceil(self.frames * self.g_noise / (self.NORM_TEST ** 2 * max(gnorm2, 1e-300)))
            self.frames = min(self.max_frames, max(want, self.frames + 1))
        elif self.g_noise < 0.25 * self.NORM_TEST ** 2 * gnorm2 and self.frames > 1:
            self.frames = max(1, self.frames // 2)
        if est.curvature is not None:
            self.mean_curvature = float(est.curvature.mean())
        if gnorm2 == 0.0:                  # flat at this scale: look wider, or restart
            self._fail()
            return
        c = self.mean_curvature
        gamma0 = 1.0 / c if c > 0 else self.sigma / math.sqrt(gnorm2)
        d = self.memory.direction(g, gamma0)
        if not float(g @ d) < 0:           # not a descent direction: forget the curvature pairs
            self.memory.clear()
            d = -gamma0 * g
        self.d, self.alpha, self.trials, self.expanding, self.line_best = d, 1.0, 0, False, None
        self.phase = "line"

    def _line(self, fy: float) -> None:
        self.trials += 1
        slope = float(self.g @ self.d)
        tolerance = 2 * self.noise
        if self.expanding:
            a_best, f_best = self.line_best
            if fy < f_best - tolerance and self.trials < self.max_trials:
                self.line_best = (self.alpha, fy)
                self.alpha *= 2
                return
            self._accept(a_best, f_best)
            return
        if fy <= self.fx + ARMIJO * self.alpha * slope + tolerance:
            linear = (self.fx - fy) > -0.9 * self.alpha * slope
            if self.trials == 1 and linear and self.trials < self.max_trials:
                self.expanding, self.line_best = True, (self.alpha, fy)
                self.alpha *= 2
                return
            self._accept(self.alpha, fy)
            return
        step = self.alpha * float(self.d.norm())
        if self.trials >= self.max_trials or step < 1e-14 * (1 + float(self.x.abs().max())):
            self._fail()
            return
        # minimiser of the quadratic through f(x), the slope and f(x + αd), kept within [0.1α, 0.5α]
        curv = fy - self.fx - self.alpha * slope
        a_new = -slope * self.alpha ** 2 / (2 * curv) if curv > 0 else 0.5 * self.alpha
        self.alpha = min(max(a_new, 0.1 * self.alpha), 0.5 * self.alpha)

    def _sigma_after(self, step: float) -> float:
        floor = self.sigma_floor * (1 + float(self.x.abs().max()))
        wide = 3 * math.sqrt(self.noise / self.mean_curvature) if self.noise > 0 and self.mean_curvature > 0 else 0.0
        return min(max(self.sigma_ratio * step, wide, floor), self.sigma0)

    def _accept(self, alpha: float, fy: float) -> None:
        s = alpha * self.d
        self.x = self.x + s
        improved = fy < self.restart_best - 1e-12 * max(1.0, abs(self.restart_best))
        self.restart_best = min(self.restart_best, fy)
        self.fx = fy
        self.g_prev, self.s_prev, self.g_noise_prev = self.g, s, self.g_noise
        self.since_improved = 0 if improved else self.since_improved + 1
        self.sigma = self._sigma_after(float(s.norm()))
        self.phase = "gradient"
        if self.since_improved >= self.patience:
            self._restart()

    def _fail(self) -> None:
        """A line search found no decrease (or the gradient vanished): drop the curvature pairs; then, for a
        noisy f, average more frames, else shrink σ; at σ_floor (or the most frames) with no pairs, restart."""
        floor = self.sigma_floor * (1 + float(self.x.abs().max()))
        self.g_prev = self.s_prev = None
        self.phase = "gradient"
        if len(self.memory):
            self.memory.clear()
        elif self.noise > 0 and self.frames < self.max_frames:
            self.frames = min(self.max_frames, 2 * self.frames)
        elif self.noise == 0 and self.sigma > floor:
            self.sigma = max(0.1 * self.sigma, floor)
        else:
            self._restart()

    def _restart(self) -> None:
        self.restarts += 1
        self.memory.clear()
        self.frames = 1
        z = torch.randn(self.dim, generator=self.generator, dtype=self.dtype)
        self._start(self.x0 + self.sigma0 * z, self.sigma0)

    # -- checkpoints --------------------------------------------------------------------------------------
    _STATE = ("x", "fx", "sigma", "phase", "g", "g_prev", "g_noise", "g_noise_prev", "s_prev", "d", "alpha",
              "trials", "expanding", "line_best", "mean_curvature", "restart_best", "since_improved", "frames",
              "curvature_norm", "since_central", "mode", "n_gradients", "n_evals", "n_steps", "restarts", "best_f", "best_x")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (take it after ``tell``)."""
        if self._pending is not None:
            raise AskTellError("state_dict: points are pending; take checkpoints after tell()")
        state = {k: (v.clone() if torch.is_tensor(v) else v) for k in self._STATE for v in [getattr(self, k)]}
        return {**state, "noise_samples": [list(p) for p in self.noise_samples], "memory": self.memory.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self._STATE:
            v = state[k]
            setattr(self, k, v.clone() if torch.is_tensor(v) else v)
        self.noise_samples = [tuple(p) for p in state["noise_samples"]]
        self._noise_fit = None
        self.memory.load_state_dict(state["memory"])
        self.generator.set_state(state["generator"])
        self._pending = None
