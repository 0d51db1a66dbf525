"""Test functions on R^D with the exact value and gradient of their Gaussian smoothing.

For x ~ N(loc, diag(scale²)) each function here knows ``E f`` as differentiable torch code of (loc, scale),
so autograd gives the exact gradient an estimator should hit, for both loc and scale:

- closed forms from Gaussian moments (sphere, ellipsoid, Rosenbrock, Styblinski-Tang) and from
  ``E cos(kx) = cos(kμ) e^{−k²σ²/2}`` (Rastrigin);
- Ackley has no closed form. Its cosine term is exact through the Jacobi-Anger expansion
  ``exp(b cos θ) = I₀(b) + 2 Σ_k I_k(b) cos kθ``; its radial term ``E exp(−a √S)`` (S = ‖x‖²) is written as a
  Lévy mixture of Laplace transforms, ``exp(−a√s) = ∫ ℓ_a(t) e^{−ts} dt``, where ``E e^{−tS}`` is closed-form,
  and the remaining one-dimensional integral is done by the trapezoid rule on t = eᵘ (spectrally accurate for
  this smooth, fast-decaying integrand). The result is cached, and :meth:`BenchmarkFunction.reference_error`
  reports its error bar (the change when the number of nodes is halved).

Example::

    fn = FUNCTIONS["rosenbrock"]
    loc, scale = fn.default_loc(10), torch.full((10,), 0.1, dtype=torch.float64)
    g_loc, g_scale = fn.gradient(loc, scale)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError

TWO_PI = 2 * math.pi


def _moments(loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """E x, E x², E x³, E x⁴ for x ~ N(loc, scale²), elementwise."""
    m, v = loc, scale * scale
    return m, m * m + v, m ** 3 + 3 * m * v, m ** 4 + 6 * m * m * v + 3 * v * v


# -- sphere ---------------------------------------------------------------------------------------------------
def sphere(x: Tensor) -> Tensor:
    """Σ x_i²: ``[..., D] -> [...]``."""
    return (x * x).sum(-1)


def _sphere_smoothed(loc, scale):
    return (loc * loc + scale * scale).sum(-1)


# -- ill-conditioned quadratic (ellipsoid) --------------------------------------------------------------------
def _ellipsoid_weights(d: int, like: Tensor) -> Tensor:
    if d == 1:
        return torch.ones(1, dtype=like.dtype)
    return 10.0 ** (6.0 * torch.arange(d, dtype=like.dtype) / (d - 1))


def ellipsoid(x: Tensor) -> Tensor:
    """Σ 10^{6 i/(D−1)} x_i²: a quadratic with condition number 10⁶."""
    return (_ellipsoid_weights(x.shape[-1], x) * x * x).sum(-1)


def _ellipsoid_smoothed(loc, scale):
    return (_ellipsoid_weights(loc.shape[-1], loc) * (loc * loc + scale * scale)).sum(-1)


# -- Rosenbrock -----------------------------------------------------------------------------------------------
def rosenbrock(x: Tensor) -> Tensor:
    """Σ_{i<D−1} 100 (x_{i+1} − x_i²)² + (1 − x_i)²."""
    a, b = x[..., :-1], x[..., 1:]
    return (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum(-1)


def _rosenbrock_smoothed(loc, scale):
    m1, m2, _, m4 = _moments(loc, scale)
    a1, a2, a4 = m1[..., :-1], m2[..., :-1], m4[..., :-1]
    b1, b2 = m1[..., 1:], m2[..., 1:]
    return (100 * (b2 - 2 * b1 * a2 + a4) + 1 - 2 * a1 + a2).sum(-1)


# -- Rastrigin ------------------------------------------------------------------------------------------------
def rastrigin(x: Tensor) -> Tensor:
    """10 D + Σ x_i² − 10 cos(2π x_i)."""
    return 10 * x.shape[-1] + (x * x - 10 * torch.cos(TWO_PI * x)).sum(-1)


def _rastrigin_smoothed(loc, scale):
    ecos = torch.cos(TWO_PI * loc) * torch.exp(-0.5 * (TWO_PI * scale) ** 2)
    return 10 * loc.shape[-1] + (loc * loc + scale * scale - 10 * ecos).sum(-1)


# -- Styblinski-Tang ------------------------------------------------------------------------------------------
def styblinski_tang(x: Tensor) -> Tensor:
    """½ Σ x_i⁴ − 16 x_i² + 5 x_i."""
    return 0.5 * (x ** 4 - 16 * x * x + 5 * x).sum(-1)


def _styblinski_tang_smoothed(loc, scale):
    m1, m2, _, m4 = _moments(loc, scale)
    return 0.5 * (m4 - 16 * m2 + 5 * m1).sum(-1)


# -- Ackley ---------------------------------------------------------------------------------------------------
def ackley(x: Tensor) -> Tensor:
    """−20 exp(−0.2 √(‖x‖²/D)) − exp(Σ cos(2π x_i)/D) + 20 + e."""
    d = x.shape[-1]
    return (-20 * torch.exp(-0.2 * torch.sqrt((x * x).sum(-1) / d)) - torch.exp(torch.cos(TWO_PI * x).sum(-1) / d)
            + 20 + math.e)


def _bessel_i(k: int, b: float, terms: int = 40) -> float:
    """Modified Bessel function I_k(b) by its power series (b ≤ 1 here, so 40 terms are exact in float64)."""
    return sum((b / 2) ** (2 * m + k) / (math.factorial(m) * math.factorial(m + k)) for m in range(terms))


def _expected_exp_cos(loc: Tensor, scale: Tensor, b: float, kmax: int = 24) -> Tensor:
    """E exp(b cos(2π x)) for x ~ N(loc, scale²), elementwise, by the Jacobi-Anger expansion."""
    out = torch.full_like(loc, _bessel_i(0, b))
    for k in range(1, kmax + 1):
        out = out + 2 * _bessel_i(k, b) * torch.cos(TWO_PI * k * loc) * torch.exp(-0.5 * (TWO_PI * k * scale) ** 2)
    return out


def _expected_exp_minus_sqrt(loc: Tensor, scale: Tensor, a: float, nodes: int) -> Tensor:
    """E exp(−a √S), S = Σ x_i², by the Lévy mixture ∫ ℓ_a(t) E e^{−tS} dt with t = eᵘ, trapezoid rule."""
    lo = math.log(a * a / 4) - math.log(800.0)       # below: the Lévy weight is < e^{-800}
    u = torch.linspace(lo, 80.0, nodes, dtype=loc.dtype)
    t = torch.exp(u)                                  # [U]
    m2, v = (loc * loc).unsqueeze(-2), (scale * scale).unsqueeze(-2)     # [*batch, 1, D]
    one_plus = 1 + 2 * t[:, None] * v                                 # [*batch, U, D]
    log_mgf = (-0.5 * torch.log(one_plus) - t[:, None] * m2 / one_plus).sum(-1)   # [*batch, U]
    log_levy = math.log(a / (2 * math.sqrt(math.pi))) - 0.5 * u - a * a / (4 * t)
    integrand = torch.exp(log_mgf + log_levy)
    return torch.trapezoid(integrand, u, dim=-1)


_ACKLEY_NODES = 6001


def _ackley_radial(loc, scale, nodes=_ACKLEY_NODES):
    d = loc.shape[-1]
    return _expected_exp_minus_sqrt(loc, scale, 0.2 / math.sqrt(d), nodes)


def _ackley_smoothed(loc, scale, nodes=_ACKLEY_NODES):
    d = loc.shape[-1]
    cos_term = _expected_exp_cos(loc, scale, 1.0 / d).prod(-1)
    return -20 * _ackley_radial(loc, scale, nodes) - cos_term + 20 + math.e


# -- per-coordinate terms of the separable functions ----------------------------------------------------------
def _sphere_term(v: Tensor, i: Tensor) -> Tensor:
    return v * v


def _rastrigin_term(v: Tensor, i: Tensor) -> Tensor:
    return 10 + v * v - 10 * torch.cos(TWO_PI * v)


def _styblinski_tang_term(v: Tensor, i: Tensor) -> Tensor:
    return 0.5 * (v ** 4 - 16 * v * v + 5 * v)


# -- the registry ---------------------------------------------------------------------------------------------
# -- non-separable functions, where every coordinate's MVD difference carries the others' noise -------------
# They depend on x through s = w·x/√D (w_i from 1 to 2), a Gaussian with mean m = w·μ/√D and variance
# v = Σ w_i² σ_i²/D, so E g(s) is a one-dimensional Gaussian expectation: closed form for the polynomial,
# exponential and cosine, trapezoid quadrature (exact to float64 rounding here) for the logistic.
def _sum_weights(d: int, like: Tensor) -> Tensor:
    return torch.linspace(1.0, 2.0, d, dtype=like.dtype) if d > 1 else torch.ones(1, dtype=like.dtype)


def _weighted_sum(x: Tensor) -> Tensor:
    d = x.shape[-1]
    return (x * _sum_weights(d, x)).sum(-1) / math.sqrt(d)


def _weighted_sum_moments(loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    d = loc.shape[-1]
    w = _sum_weights(d, loc)
    return (w * loc).sum(-1) / math.sqrt(d), (w * w * scale * scale).sum(-1) / d


def sum_quartic(x: Tensor) -> Tensor:
    """(w·x/√D)⁴: a steep polynomial of a weighted sum of every coordinate."""
    return _weighted_sum(x) ** 4


def _sum_quartic_smoothed(loc, scale):
    m, v = _weighted_sum_moments(loc, scale)
    return m ** 4 + 6 * m * m * v + 3 * v * v


def sum_exp(x: Tensor) -> Tensor:
    """exp(w·x/√D)."""
    return torch.exp(_weighted_sum(x))


def _sum_exp_smoothed(loc, scale):
    m, v = _weighted_sum_moments(loc, scale)
    return torch.exp(m + v / 2)


def sum_cos(x: Tensor) -> Tensor:
    """cos(3 w·x/√D) (held out from the tuning of Auto)."""
    return torch.cos(3 * _weighted_sum(x))


def _sum_cos_smoothed(loc, scale):
    m, v = _weighted_sum_moments(loc, scale)
    return torch.cos(3 * m) * torch.exp(-4.5 * v)


#: Quadrature nodes of sum-logistic's smoothing.
QUADRATURE_NODES = 4001


def sum_logistic(x: Tensor) -> Tensor:
    """10·logistic(4 w·x/√D) (held out from the tuning of Auto)."""
    return 10 * torch.sigmoid(4 * _weighted_sum(x))


def _sum_logistic_smoothed(loc, scale):
    # The trapezoid rule on z ∈ [−14, 14] (the Gaussian weight is below 1e-42 outside): exponentially
    # convergent for an integrand analytic in a strip, which the logistic is (Gauss-Hermite is not, here).
    z = torch.linspace(-14.0, 14.0, QUADRATURE_NODES, dtype=loc.dtype)
    m, v = _weighted_sum_moments(loc, scale)
    s = m.unsqueeze(-1) + v.sqrt().unsqueeze(-1) * z
    dens = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return 10 * torch.trapezoid(torch.sigmoid(4 * s) * dens, z, dim=-1)


def product(x: Tensor) -> Tensor:
    """Π_i (1 + x_i/√D)²: a product of every coordinate (scaled so that its spread does not grow with D)."""
    return ((1 + x / math.sqrt(x.shape[-1])) ** 2).prod(-1)


def _product_smoothed(loc, scale):
    d = loc.shape[-1]
    return ((1 + loc / math.sqrt(d)) ** 2 + scale * scale / d).prod(-1)



@dataclass(frozen=True)
class BenchmarkFunction:
    """A test function with the exact value and gradient of its Gaussian smoothing.

    Attributes:
      name: registry name.
      f: the function, ``[..., D] -> [...]`` (vectorised and differentiable torch code).
      smoothed: ``(loc [*batch, D], scale [*batch, D]) -> E f [*batch]``, differentiable.
      domain: half-width of the usual search box [−domain, domain]^D.
      minimum_per_dim: the global minimum of f divided by D (0 except Styblinski-Tang, −39.166).
      exact: "closed form" or how the reference is computed.
    """

    name: str
    f: Callable[[Tensor], Tensor]
    smoothed: Callable[[Tensor, Tensor], Tensor]
    domain: float
    minimum_per_dim: float = 0.0
    exact: str = "closed form"
    term: Callable[[Tensor, Tensor], Tensor] | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, x: Tensor) -> Tensor:
        return self.f(x)

    @property
    def coordinate_term(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """``term(x_i, i)`` when f = Σ_i term(x_i, i) (see :mod:`stochgrad.structured`), else None."""
        return self.term

    def minimum(self, dim: int) -> float:
        """The global minimum value of f in dimension ``dim``."""
        return self.minimum_per_dim * dim

    def expected(self, loc: Tensor, scale: Tensor) -> Tensor:
        """E f under N(loc, scale²), ``[*batch]``."""
        return self.smoothed(loc, scale)

    def gradient(self, loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Exact (∂/∂loc, ∂/∂scale) of E f, each shaped like ``loc`` (cached per (loc, scale))."""
        loc, scale = torch.broadcast_tensors(loc.detach(), scale.detach())
        key = (loc.dtype, tuple(loc.shape), loc.cpu().numpy().tobytes(), scale.cpu().numpy().tobytes())
        if key not in self._cache:
            lo = loc.clone().requires_grad_(True)
            sc = scale.clone().requires_grad_(True)
            g_loc, g_scale = torch.autograd.grad(self.smoothed(lo, sc).sum(), (lo, sc))
            self._cache[key] = (g_loc, g_scale)
        g_loc, g_scale = self._cache[key]
        return g_loc.clone(), g_scale.clone()

    def reference_error(self, loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Error bar of :meth:`gradient` (0 for closed forms; for Ackley, the change in the gradient when the
        quadrature uses half the nodes, a conservative bound for the trapezoid rule here)."""
        if self.name != "ackley":
            return torch.zeros_like(loc), torch.zeros_like(loc)
        g_full = self.gradient(loc, scale)
        lo = loc.detach().clone().requires_grad_(True)
        sc = scale.detach().clone().requires_grad_(True)
        coarse = torch.autograd.grad(_ackley_smoothed(lo, sc, (_ACKLEY_NODES + 1) // 2).sum(), (lo, sc))
        return (g_full[0] - coarse[0]).abs(), (g_full[1] - coarse[1]).abs()

    def default_loc(self, dim: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
        """A fixed point where the lab measures gradients: uniform in [−domain/2, domain/2]^D, seeded."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + dim)
        return (torch.rand(dim, generator=gen, dtype=dtype) - 0.5) * self.domain


FUNCTIONS: dict[str, BenchmarkFunction] = {fn.name: fn for fn in [
    BenchmarkFunction("sphere", sphere, _sphere_smoothed, 5.12, term=_sphere_term),
    BenchmarkFunction("ellipsoid", ellipsoid, _ellipsoid_smoothed, 5.12),   # its weights depend on D
    BenchmarkFunction("rosenbrock", rosenbrock, _rosenbrock_smoothed, 2.048),
    BenchmarkFunction("rastrigin", rastrigin, _rastrigin_smoothed, 5.12, term=_rastrigin_term),
    BenchmarkFunction("styblinski-tang", styblinski_tang, _styblinski_tang_smoothed, 5.0, -39.16616570377142,
                      term=_styblinski_tang_term),
    BenchmarkFunction("ackley", ackley, _ackley_smoothed, 32.768,
                      exact="cosine term exact (Jacobi-Anger); radial term by Lévy-mixture quadrature, 6001 nodes"),
    BenchmarkFunction("sum-quartic", sum_quartic, _sum_quartic_smoothed, 2.0),
    BenchmarkFunction("sum-exp", sum_exp, _sum_exp_smoothed, 1.0),
    BenchmarkFunction("product", product, _product_smoothed, 1.0),
    BenchmarkFunction("sum-cos", sum_cos, _sum_cos_smoothed, 2.0),
    BenchmarkFunction("sum-logistic", sum_logistic, _sum_logistic_smoothed, 1.0,
                      exact=f"trapezoid quadrature over the weighted sum's Gaussian, {QUADRATURE_NODES} nodes"),
]}

#: The non-separable functions (every coordinate couples to every other), where the score function can
#: beat coupled MVD; ``sum-cos`` and ``sum-logistic`` were held out when Auto was designed.
COUPLED = ("sum-quartic", "sum-exp", "product", "sum-cos", "sum-logistic")


def get_function(name: str) -> BenchmarkFunction:
    """The registered function called ``name``; an unknown name lists the valid ones."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"function: unknown name {name!r}; choose one of {', '.join(FUNCTIONS)}") from None
