"""Gradient-quality metrics of an estimator on a problem with a known gradient, over repeated estimates.

All repeats of one measurement run as independent copies in a batch (``batch_shape = [R]``), so one call of
f covers many estimates; the repeats are split into chunks to bound memory, with one generator running
through the chunks, so results depend only on the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.distributions.normal import Normal
from stochgrad.errors import InvalidArgumentError
from stochgrad.estimators.base import Estimator
from stochgrad.estimators.registry import make_estimator
from stochgrad.lab.functions import BenchmarkFunction

#: Points × coordinates per chunk of repeats (about 64 MB of float64 points).
CHUNK_ELEMENTS = 8_000_000
#: Estimates a stateful estimator (CCMVD, CCSF, Auto: running variances) makes at the same point before it is
#: measured, as it would have made at nearby points in an optimiser; their evaluations are not counted.
WARMUP = 20


def is_stateful(estimator: Estimator) -> bool:
    """Whether the estimator keeps running statistics between estimates (it has ``reset``)."""
    return callable(getattr(estimator, "reset", None))


@dataclass
class Problem:
    """E f under N(loc, scale²) for a benchmark function, and the parameters whose gradient is estimated."""

    function: BenchmarkFunction
    loc: Tensor
    scale: Tensor
    params: tuple[str, ...] = ("loc",)

    @classmethod
    def default(cls, function: BenchmarkFunction, dim: int, scale: float = 0.1,
                params: Sequence[str] = ("loc",), seed: int = 0) -> Problem:
        if dim < 1 or (function.name == "rosenbrock" and dim < 2):
            raise InvalidArgumentError(f"dim: {function.name} needs dim >= {2 if function.name == 'rosenbrock' else 1}; "
                                       f"got {dim}")
        if not scale > 0:
            raise InvalidArgumentError(f"scale: must be > 0; got {scale}")
        loc = function.default_loc(dim, seed=seed)
        return cls(function, loc, torch.full_like(loc, scale), tuple(params))

    @property
    def dim(self) -> int:
        return self.loc.shape[-1]

    def dist(self, copies: int | None = None) -> Normal:
        if copies is None:
            return Normal(self.loc, self.scale)
        return Normal(self.loc.expand(copies, self.dim), self.scale.expand(copies, self.dim))

    def exact(self) -> Tensor:
        """The exact gradient of the estimated parameters, concatenated: ``[P·D]``."""
        g_loc, g_scale = self.function.gradient(self.loc, self.scale)
        return torch.cat([{"loc": g_loc, "scale": g_scale}[p] for p in self.params])


def repeated_estimates(estimator: Estimator, problem: Problem, repeats: int, generator: torch.Generator,
                       warmup: int | None = None) -> tuple[Tensor, int, float]:
    """``repeats`` independent estimates ``[R, P·D]``, the evaluations per estimate, and seconds per estimate.

    A stateful estimator is reset and then warmed up with ``warmup`` (default :data:`WARMUP`) uncounted
    estimates on each chunk of copies; every copy keeps its own statistics, so the repeats stay independent.
    """
    warmup = (WARMUP if warmup is None else warmup) if is_stateful(estimator) else 0
    per_copy = estimator.n_evals(problem.dist(), problem.params) * problem.dim
    chunk = max(1, min(repeats, CHUNK_ELEMENTS // max(per_copy, 1)))
    out, n_evals, elapsed = [], 0, 0.0
    done = 0
    while done < repeats:
        r = min(chunk, repeats - done)
        dist = problem.dist(copies=r)
        if warmup:
            estimator.reset()
            for _ in range(warmup):
                estimator.estimate(problem.function, dist, generator=generator, params=problem.params)
        t0 = time.perf_counter()
        g = estimator.estimate(problem.function, dist, generator=generator, params=problem.params)
        elapsed += time.perf_counter() - t0
        out.append(torch.cat([g.grad[p] for p in problem.params], -1))
        n_evals = g.n_evals
        done += r
    return torch.cat(out, 0), n_evals, elapsed / repeats


def quality(estimates: Tensor, exact: Tensor) -> dict[str, float | list[float]]:
    """Metrics of repeated estimates ``[R, K]`` against the exact gradient ``[K]``.

    Returns a dict with: ``rel_mse`` (mean of ‖ĝ − g‖²/‖g‖²) and its standard error ``rel_mse_se``; ``bias_rel``
    (‖mean ĝ − g‖/‖g‖) and ``bias_max_z`` (largest |z| of the per-component bias against its standard error);
    ``total_variance`` (Σ_k Var ĝ_k) and ``variance`` per component; ``cos_mean`` and ``cos_p10`` (mean and
    10th percentile of the cosine between ĝ and g).
    """
    r = estimates.shape[0]
    gnorm2 = float((exact * exact).sum())
    if gnorm2 == 0:
        raise InvalidArgumentError("exact gradient is zero; relative metrics are undefined at this point")
    sq = ((estimates - exact) ** 2).sum(-1) / gnorm2
    mean = estimates.mean(0)
    var = estimates.var(0) if r > 1 else torch.full_like(mean, math.nan)
    se = (var / r).sqrt()
    diff = mean - exact
    z = torch.where(se > 0, diff / se.clamp_min(1e-300), torch.where(diff.abs() < 1e-12, 0.0, math.inf))
    cos = (estimates @ exact) / (estimates.norm(dim=-1).clamp_min(1e-300) * math.sqrt(gnorm2))
    return {
        "rel_mse": float(sq.mean()),
        "rel_mse_se": float(sq.std() / math.sqrt(r)) if r > 1 else math.nan,
        "bias_rel": float(diff.norm() / math.sqrt(gnorm2)),
        "bias_max_z": float(z.abs().max()),
        "total_variance": float(var.sum()),
        "variance": var.tolist(),
        "cos_mean": float(cos.mean()),
        "cos_p10": float(torch.quantile(cos, 0.1)),
    }


def measure(estimator_name: str, problem: Problem, budget: int, repeats: int, seed: int = 0,
            estimator: Estimator | None = None) -> dict:
    """One record: ``estimator_name`` at ``budget`` evaluations on ``problem``, over ``repeats`` estimates.

    Args:
      estimator_name: a name from :func:`stochgrad.estimators.registry.estimator_names`.
      problem: the function, point and parameters.
      budget: evaluations of f per estimate (the estimator uses as many as it can; see ``n_evals``).
      repeats: independent estimates to compute the metrics from.
      seed: seeds the generator for all the estimates.
      estimator: use this instance instead of building one from the name.
    """
    est = estimator or make_estimator(estimator_name, budget, problem.dist(), problem.params)
    gen = torch.Generator().manual_seed(seed)
    estimates, n_evals, seconds = repeated_estimates(est, problem, repeats, gen)
    exact = problem.exact()
    record = {
        "function": problem.function.name, "dim": problem.dim, "scale": float(problem.scale.mean()),
        "params": ",".join(problem.params), "estimator": estimator_name, "budget": budget, "n_evals": n_evals,
        "repeats": repeats, "seed": seed, "grad_norm": float(exact.norm()),
        "warmup": WARMUP if is_stateful(est) else 0,
    }
    record.update(quality(estimates, exact))
    record["seconds_per_estimate"] = seconds
    return record
