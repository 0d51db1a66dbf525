"""Black-box minimisation with search gradients: an ask/tell optimiser and ``minimize``."""

from stochgrad.optim.minimize import MinimizeResult, minimize
from stochgrad.optim.search import AskTellError, DivergenceError, SearchGradient
from stochgrad.optim.shaping import centered_ranks

__all__ = ["SearchGradient", "AskTellError", "DivergenceError", "minimize", "MinimizeResult", "centered_ranks"]
