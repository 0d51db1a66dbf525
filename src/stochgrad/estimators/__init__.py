"""Gradient estimators for ``∇_θ E_{x~p_θ} f(x)``."""

from stochgrad.estimators.ars import ARS
from stochgrad.estimators.auto import Auto
from stochgrad.estimators.base import Estimator, GradientEstimate, Plan
from stochgrad.estimators.baselines import BASELINES
from stochgrad.estimators.hybrid import CCMVD, CCSF, min_variance_weight
from stochgrad.estimators.measure_valued import MeasureValued
from stochgrad.estimators.pathwise import Pathwise
from stochgrad.estimators.score_function import ScoreFunction

__all__ = ["Estimator", "GradientEstimate", "Plan", "BASELINES", "ScoreFunction", "MeasureValued", "Pathwise",
           "CCMVD", "CCSF", "Auto", "ARS", "min_variance_weight"]
