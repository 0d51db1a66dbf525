"""Factorised families with explicitly seeded sampling, closed-form scores and measure-valued derivatives."""

from stochgrad.distributions.base import Family
from stochgrad.distributions.bernoulli import Bernoulli
from stochgrad.distributions.binomial import Binomial
from stochgrad.distributions.categorical import Categorical
from stochgrad.distributions.exponential import Exponential
from stochgrad.distributions.from_torch import as_family, from_torch
from stochgrad.distributions.gamma import Gamma
from stochgrad.distributions.geometric import Geometric
from stochgrad.distributions.normal import Normal
from stochgrad.distributions.poisson import Poisson
from stochgrad.distributions.uniform import Uniform
from stochgrad.distributions.weak import (
    WeakDerivative,
    find_weak_derivative,
    register_weak_derivative,
    supported_params,
    weak_derivative,
)

FAMILIES: tuple[type[Family], ...] = (
    Normal, Bernoulli, Categorical, Poisson, Exponential, Gamma, Binomial, Geometric, Uniform)

__all__ = [
    "Family", "Normal", "Bernoulli", "Categorical", "Poisson", "Exponential", "Gamma", "Binomial", "Geometric",
    "Uniform", "WeakDerivative", "register_weak_derivative", "find_weak_derivative", "weak_derivative",
    "supported_params", "FAMILIES", "from_torch", "as_family",
]
