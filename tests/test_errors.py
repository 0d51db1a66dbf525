"""Every bad input a user can give gets an ``sg.StochgradError`` whose message names the argument."""

from __future__ import annotations

import math

import pytest
import torch

import stochgrad as sg

GEN = torch.Generator


def _f(x):
    return (x ** 2).sum(-1)


@pytest.mark.parametrize("make, match", [
    (lambda: sg.Normal(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0])), r"'scale' must satisfy > 0; got 0.0 at index \(1,\)"),
    (lambda: sg.Normal(torch.zeros(3), -1.0), r"'scale' must satisfy > 0; got -1.0"),
    (lambda: sg.Normal(torch.tensor([0.0, math.nan]), 1.0), r"'loc' must be finite; got nan at index \(1,\)"),
    (lambda: sg.Normal(torch.tensor([math.inf]), 1.0), r"'loc' must be finite; got inf"),
    (lambda: sg.Normal(torch.zeros(2), torch.tensor([1.0, math.inf])), r"'scale' must be finite; got inf at index \(1,\)"),
    (lambda: sg.Normal(torch.zeros(2), torch.tensor([math.nan, 1.0])), r"'scale' must be finite; got nan at index \(0,\)"),
    (lambda: sg.Poisson(torch.tensor([1.0, 0.0])), r"'rate' must satisfy > 0; got 0.0"),
    (lambda: sg.Exponential(torch.tensor([-2.0])), r"'rate' must satisfy > 0; got -2.0"),
    (lambda: sg.Gamma(torch.tensor([0.0]), torch.tensor([1.0])), r"'concentration' must satisfy > 0"),
    (lambda: sg.Gamma(torch.tensor([1.0]), torch.tensor([math.nan])), r"'rate' must be finite"),
    (lambda: sg.Bernoulli(probs=torch.tensor([0.5, 1.5])), r"'probs' must satisfy 0 <= value <= 1; got 1.5"),
    (lambda: sg.Bernoulli(probs=torch.tensor([-0.1])), r"'probs' must satisfy 0 <= value <= 1; got -0.1"),
    (lambda: sg.Bernoulli(), r"exactly one of 'probs' or 'logits'; got neither"),
    (lambda: sg.Bernoulli(probs=torch.tensor([0.5]), logits=torch.tensor([0.0])), r"got both"),
    (lambda: sg.Binomial(0, torch.tensor([0.5])), r"'total_count' must be a positive integer"),
    (lambda: sg.Binomial(2.5, torch.tensor([0.5])), r"'total_count' must be a positive integer"),
    (lambda: sg.Binomial(3, torch.tensor([1.2])), r"'probs' must satisfy 0 <= value <= 1"),
    (lambda: sg.Geometric(torch.tensor([0.0])), r"'probs' must satisfy 0 < value <= 1"),
    (lambda: sg.Uniform(high=torch.tensor([1.0, -1.0])), r"'high' must be greater than 'low'"),
    (lambda: sg.Categorical(torch.tensor([[0.0, math.nan]])), r"'logits' must be finite"),
    (lambda: sg.Categorical(torch.zeros(3)), r"at least 2 dimension"),
    (lambda: sg.Normal(0.0, 1.0), r"at least 1 dimension"),
])
def test_bad_parameters(make, match) -> None:
    with pytest.raises(sg.InvalidArgumentError, match=match) as info:
        make()
    assert isinstance(info.value, ValueError) and isinstance(info.value, sg.StochgradError)


@pytest.mark.parametrize("make, match", [
    (lambda: sg.ScoreFunction(1, baseline="loo"), r"n_samples: .*leave-one-out baseline needs at least 2 .* got 1"),
    (lambda: sg.ScoreFunction(0), r"n_samples: .* needs at least 1 .* got 0"),
    (lambda: sg.ScoreFunction(2, baseline="loo", antithetic=True), r"n_samples: .*antithetic pairs needs at least 4"),
    (lambda: sg.ScoreFunction(5, antithetic=True), r"n_samples: antithetic pairs need an even number .* got 5"),
    (lambda: sg.ScoreFunction(2.5), r"n_samples must be an int; got 2.5"),
    (lambda: sg.MeasureValued(0), r"samples_per_dim: .* at least 1 .* got 0"),
    (lambda: sg.Pathwise(0), r"n_samples: Pathwise needs at least 1 evaluation; got 0"),
])
def test_budgets_too_small(make, match) -> None:
    with pytest.raises(sg.BudgetError, match=match):
        make()


def test_unknown_baseline_lists_the_valid_ones() -> None:
    with pytest.raises(sg.InvalidArgumentError, match=r"baseline: got 'median'; choose one of \[None, 'mean', 'loo'"):
        sg.ScoreFunction(4, baseline="median")


def _normal():
    return sg.Normal(torch.zeros(3), torch.ones(3))


@pytest.mark.parametrize("f, match", [
    (lambda x: (x ** 2).sum(-1, keepdim=True), r"f returned values of shape \[8, 1\] .* shape \[8\]"),
    (lambda x: x ** 2, r"shape \[8, 3\]"),
    (lambda x: torch.where(torch.arange(x.shape[0]) == 2, math.nan, 1.0), r"non-finite .* point index\(es\) \[2\]"),
    (lambda x: torch.where(torch.arange(x.shape[0]) >= 5, math.inf, 1.0),
     r"3 non-finite value\(s\) .* \[5, 6, 7\]; e.g. f\(points\[5\]\) = \[inf\]"),
    (lambda x: "nope", r"f must return a tensor"),
])
def test_f_returning_bad_values(f, match) -> None:
    with pytest.raises(sg.EvaluationError, match=match):
        sg.ScoreFunction(8).estimate(f, _normal(), generator=GEN().manual_seed(0))


def test_serial_f_returning_a_vector() -> None:
    with pytest.raises(sg.EvaluationError, match=r"Serial: f must return one number per point; got a tensor"):
        sg.ScoreFunction(4).estimate(lambda x: x, _normal(), generator=GEN().manual_seed(0),
                                     evaluator=sg.evaluators.Serial())


def test_pathwise_on_an_f_without_gradients() -> None:
    with pytest.raises(sg.EvaluationError, match=r"Pathwise needs f to be differentiable .* no gradient"):
        sg.Pathwise(4).estimate(lambda x: torch.as_tensor(_f(x.detach().numpy())), _normal(),
                                generator=GEN().manual_seed(0))


def test_pathwise_on_a_discrete_family() -> None:
    with pytest.raises(sg.UnsupportedError, match=r"Bernoulli.probs has no pathwise .* use ScoreFunction or "
                                                 r"MeasureValued"):
        sg.Pathwise(4).estimate(_f, sg.Bernoulli(probs=torch.full((3,), 0.5)), generator=GEN().manual_seed(0))


def test_mvd_for_a_parameter_without_decomposition_names_the_alternatives() -> None:
    with pytest.raises(sg.UnsupportedError, match=r"no decomposition for Gamma.concentration; use ScoreFunction or "
                                                 r"Pathwise .* Gamma: \['rate'\]"):
        sg.MeasureValued(1).estimate(_f, sg.Gamma(torch.ones(3), torch.ones(3)), generator=GEN().manual_seed(0))


def test_score_function_on_a_moving_support_names_the_alternatives() -> None:
    with pytest.raises(sg.UnsupportedError, match=r"not valid for Uniform.high.*use MeasureValued or Pathwise"):
        sg.ScoreFunction(4).estimate(_f, sg.Uniform(torch.ones(3)), generator=GEN().manual_seed(0), params=("high",))


def test_antithetic_on_an_asymmetric_family() -> None:
    with pytest.raises(sg.UnsupportedError, match=r"antithetic: .* symmetric .* got Poisson"):
        sg.ScoreFunction(4, antithetic=True).estimate(_f, sg.Poisson(torch.ones(3)), generator=GEN().manual_seed(0))


@pytest.mark.parametrize("dims, match", [
    ([0, 3], r"dims: component indices must be in \[0, 3\) for Normal.loc; got \[3\]"),
    ([0.5], r"dims: need integer component indices"),
    (torch.zeros(2, 1, dtype=torch.long), r"dims: per-copy indices must be shaped \[\*batch_shape, J\]"),
])
def test_bad_dims(dims, match) -> None:
    with pytest.raises(sg.InvalidArgumentError, match=match):
        sg.MeasureValued(1, dims=dims).estimate(_f, _normal(), generator=GEN().manual_seed(0), params=("loc",))


def test_unknown_parameter_name() -> None:
    with pytest.raises(sg.InvalidArgumentError, match=r"params: Normal has no parameter 'rate'; its parameters are "
                                                     r"\['loc', 'scale'\]"):
        sg.ScoreFunction(4).estimate(_f, _normal(), generator=GEN().manual_seed(0), params=("rate",))


def test_expectation_with_nothing_to_differentiate() -> None:
    with pytest.raises(sg.InvalidArgumentError, match=r"expectation: none of the parameters of Normal"):
        sg.expectation(_f, _normal(), sg.ScoreFunction(4), generator=GEN().manual_seed(0))
