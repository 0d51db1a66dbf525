"""Black-box minimisation: the staged and quasi-Newton searches, the search-gradient optimiser, ``minimize``."""

from stochgrad.optim.minimize import MinimizeResult, minimize
from stochgrad.optim.quasi_newton import QuasiNewtonSearch
from stochgrad.optim.search import AskTellError, DivergenceError, SearchGradient
from stochgrad.optim.shaping import centered_ranks
from stochgrad.optim.staged import StagedSearch

__all__ = ["AskTellError", "DivergenceError", "MinimizeResult", "QuasiNewtonSearch", "SearchGradient", "StagedSearch",
           "centered_ranks", "minimize"]
