"""Random draws that all take an explicit ``torch.Generator`` (the families' samplers and weak derivatives use them).

``torch.distributions`` samples from the global generator; every draw in this library goes through one of
these functions instead, so that one seed gives the same numbers everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Shape = Sequence[int]


def _tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def standard_normal(shape: Shape, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    """N(0, 1) draws of the given shape."""
    return torch.randn(tuple(shape), generator=generator, dtype=dtype)


def uniform(shape: Shape, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    """Uniform(0, 1) draws, strictly positive so that ``log`` is finite."""
    return torch.rand(tuple(shape), generator=generator, dtype=dtype).clamp_min_(_tiny(dtype))


def standard_exponential(shape: Shape, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    """Exp(1) draws by inversion."""
    return -torch.log(uniform(shape, generator, dtype))


def rayleigh(shape: Shape, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    """Rayleigh(1) draws, density r·exp(−r²/2) on r > 0 (R²/2 is Exp(1))."""
    return uniform(shape, generator, dtype).log_().mul_(-2.0).sqrt_()       # √(2·Exp(1)), in place


def double_sided_maxwell(shape: Shape, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    """Double-sided Maxwell draws, density m²·φ(m) on R: a random sign times the root of a χ²₃ draw."""
    r = standard_normal((3, *shape), generator, dtype).square_().sum(0).sqrt_()
    return torch.where(torch.rand(tuple(shape), generator=generator, dtype=dtype) < 0.5, -r, r)


def standard_gamma(concentration: Tensor, generator: torch.Generator | None) -> Tensor:
    """Gamma(α, 1) draws shaped like ``concentration`` (Marsaglia and Tsang 2000, boosted for α < 1).

    ``torch._standard_gamma`` cannot take a generator, so this is a vectorised rejection sampler; each pass
    accepts more than 95% of the remaining draws.
    """
    alpha = concentration.detach()
    dtype = alpha.dtype
    boosted = alpha < 1
    a = torch.where(boosted, alpha + 1, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(alpha)
    todo = torch.ones_like(alpha, dtype=torch.bool)
    while bool(todo.any()):
        idx = todo.nonzero(as_tuple=True)
        n = idx[0].numel()
        z = standard_normal((n,), generator, dtype)
        u = uniform((n,), generator, dtype)
        dd, cc = d[idx], c[idx]
        v = (1 + cc * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + dd - dd * v + dd * torch.log(v.clamp_min(_tiny(dtype))))
        acc = tuple(i[ok] for i in idx)
        out[acc] = (dd * v)[ok]
        todo[acc] = False
    if bool(boosted.any()):
        # Gamma(α) = Gamma(α + 1)·U^(1/α), in log space: U^(1/α) alone underflows to 0 for small α (float32, α =
        # 0.1: U < 1e-4.5). Draws below the smallest normal number are clamped to it, as torch's own sampler
        # does, so no draw is 0 and log x (the score of the concentration) stays finite.
        u = uniform(alpha.shape, generator, dtype)
        boost = torch.exp(torch.log(out) + torch.log(u) / alpha).clamp_min_(_tiny(dtype))
        out = torch.where(boosted, boost, out)
    return out


def poisson(rate: Tensor, generator: torch.Generator | None) -> Tensor:
    """Poisson draws with the given (broadcast, already expanded) rates."""
    return torch.poisson(rate.detach().contiguous(), generator=generator)


def binomial(total_count: Tensor, probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Binomial draws; both tensors must already have the output shape."""
    total, p = torch.broadcast_tensors(total_count.detach(), probs.detach())
    return torch.binomial(total.contiguous(), p.contiguous(), generator=generator)


def geometric(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Failures before the first success, P(k) = (1 − p)^k p, by inversion (p = 1 gives 0)."""
    p = probs.detach()
    u = uniform(p.shape, generator, p.dtype)
    return torch.where(p >= 1, torch.zeros_like(p), torch.floor(torch.log(u) / torch.log1p(-p.clamp_max(1 - 1e-16))))


def categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Index draws from ``probs[..., K]`` (rows need not be normalised), shaped ``probs.shape[:-1]``."""
    cdf = probs.detach().cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, dtype=cdf.dtype) * cdf[..., -1:]
    k = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).squeeze(-1)
    return k.clamp_max_(probs.shape[-1] - 1)
