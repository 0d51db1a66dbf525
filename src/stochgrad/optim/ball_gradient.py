"""Gradients of the ball-smoothed objective from orthogonal antithetic directions.

For the uniform distribution on the sphere, ∇ f_σ(x) = (D / 2σ) E_u[(f(x + σu) − f(x − σu)) u], where
f_σ(x) = E_{v ~ ball}[f(x + σv)] is f averaged over the ball of radius σ (Flaxman et al. 2005; Nesterov and
Spokoiny 2017). With n rows u_1..u_n of one Haar-random orthogonal matrix every u_i is uniform on the sphere, so

    ĝ = (D / n) Σ_i δ_i u_i,    δ_i = (f(x + σu_i) − f(x − σu_i)) / (2σ),

is unbiased for ∇ f_σ(x) for every n ≤ D; for n = D it is the central-difference gradient in a random basis,
exact for every quadratic f (there f_σ = f + const), whatever σ. Orthogonality (Choromanski et al. 2018) removes
the variance that independent directions leave: for a linear f, E‖ĝ − ∇f‖² = (D/n − 1)‖∇f‖², zero at n = D
(independent Gaussian directions give (D + 1)/n · ‖∇f‖²). With f(x) known, each pair also measures the
curvature along its direction, c_i = (f(x + σu_i) + f(x − σu_i) − 2f(x)) / σ² (exact for quadratics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError


def orthogonal_directions(dim: int, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
                          ) -> Tensor:
    """``[n, dim]`` unit rows of Haar-random orthogonal matrices (orthonormal within each block of ``dim``
    rows; a new matrix per block when ``n > dim``)."""
    if dim < 1 or n < 1:
        raise InvalidArgumentError(f"orthogonal_directions: need dim >= 1 and n >= 1; got dim={dim}, n={n}")
    blocks, rows = [], 0
    while rows < n:
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
        q = q * torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1.0)   # Haar, not QR's bias
        blocks.append(q.T)
        rows += dim
    return torch.cat(blocks)[:n]


def antithetic_points(x: Tensor, sigma: float, directions: Tensor) -> Tensor:
    """The ``[2n, D]`` points x + σu_1, x − σu_1, x + σu_2, ... for directions ``[n, D]``."""
    step = sigma * directions
    return torch.stack([x + step, x - step], dim=1).reshape(-1, x.numel())


def forward_points(x: Tensor, sigma: float, directions: Tensor) -> Tensor:
    """The ``[n, D]`` points x + σu_i (one-sided differences against a known f(x))."""
    return x + sigma * directions


@dataclass
class BallGradient:
    """One estimate of ∇ f_σ(x).

    Attributes:
      grad: ĝ, ``[D]``.
      variance: estimated E‖ĝ − ∇f_σ‖² from sampling n of D directions, (D/n − 1)·(D/n)·Σδ_i² (exact in
        expectation for a linear f; 0 at n = D, where the estimate's error is only f's higher-order terms
        and its noise).
      curvature: ``[n]`` second differences c_i along each direction, or None when f(x) was not given.
      directional: ``[n]`` the δ_i.
    """

    grad: Tensor
    variance: float
    curvature: Tensor | None
    directional: Tensor


def ball_gradient(values: Tensor, sigma: float, directions: Tensor, f_center: float | None = None) -> BallGradient:
    """ĝ from f at :func:`antithetic_points` (``values`` ``[2n]``, in that order) for directions ``[n, D]``."""
    n = directions.shape[0]
    if values.shape != (2 * n,):
        raise InvalidArgumentError(f"values: need [{2 * n}] (two per direction); got {list(values.shape)}")
    pairs = values.to(directions.dtype).reshape(n, 2)
    delta = (pairs[:, 0] - pairs[:, 1]) / (2 * sigma)
    curvature = None if f_center is None else (pairs[:, 0] + pairs[:, 1] - 2 * f_center) / sigma ** 2
    return from_differences(delta, directions, curvature)


def forward_ball_gradient(values: Tensor, sigma: float, directions: Tensor, f_center: float) -> BallGradient:
    """ĝ from f at :func:`forward_points` (``values`` ``[n]``) and f(x): δ_i = (f(x + σu_i) − f(x)) / σ, also
    unbiased for ∇f_σ (E[u] = 0), with half the evaluations and an error of order σ·‖∇²f‖ instead of σ²."""
    n, _ = directions.shape
    if values.shape != (n,):
        raise InvalidArgumentError(f"values: need [{n}] (one per direction); got {list(values.shape)}")
    delta = (values.to(directions.dtype) - f_center) / sigma
    return from_differences(delta, directions, None)


def from_differences(delta: Tensor, directions: Tensor, curvature: Tensor | None) -> BallGradient:
    n, dim = directions.shape
    grad = (dim / n) * (delta @ directions)
    variance = max(0.0, dim / n - 1) * (dim / n) * float((delta * delta).sum())
    return BallGradient(grad, variance, curvature, delta)
