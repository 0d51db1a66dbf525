"""stochgrad: gradients of expectations of black-box functions, ∇_θ E_{x~p_θ} f(x).

Example::

    import torch, stochgrad as sg
    dist = sg.Normal(loc=torch.zeros(10), scale=torch.full((10,), 0.1))
    g = sg.MeasureValued(samples_per_dim=1).estimate(lambda x: (x ** 2).sum(-1), dist,
                                                     generator=torch.Generator().manual_seed(0))
    g.grad["loc"], g.variance["loc"], g.n_evals
"""

from stochgrad import evaluators
from stochgrad.distributions import (
    Bernoulli,
    Binomial,
    Categorical,
    Exponential,
    Family,
    Gamma,
    Geometric,
    Normal,
    Poisson,
    Uniform,
    from_torch,
    register_weak_derivative,
)
from stochgrad.errors import (
    BudgetError,
    EvaluationError,
    InvalidArgumentError,
    MissingExtraError,
    NonFiniteGradientError,
    StochgradError,
    UnsupportedError,
)
from stochgrad.estimators import (
    ARS,
    CCMVD,
    CCSF,
    Auto,
    Estimator,
    GradientEstimate,
    MeasureValued,
    Pathwise,
    Plan,
    ScoreFunction,
    min_variance_weight,
)
from stochgrad.expectation import expectation
from stochgrad.structured import Separable

__version__ = "0.1.0"

__all__ = [
    "Family", "Normal", "Bernoulli", "Categorical", "Poisson", "Exponential", "Gamma", "Binomial", "Geometric",
    "Uniform", "from_torch", "register_weak_derivative", "Estimator", "Plan", "GradientEstimate", "ScoreFunction",
    "MeasureValued", "Pathwise", "CCMVD", "CCSF", "Auto", "ARS", "min_variance_weight", "expectation", "Separable",
    "evaluators", "StochgradError", "InvalidArgumentError", "UnsupportedError", "BudgetError", "EvaluationError",
    "MissingExtraError", "NonFiniteGradientError", "__version__",
]
