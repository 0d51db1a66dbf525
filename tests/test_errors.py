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


def test_float64_values_that_overflow_float32() -> None:
    f = lambda x: torch.full((x.shape[0],), 1e300, dtype=torch.float64)  # noqa: E731
    with pytest.raises(sg.EvaluationError, match=r"non-finite .* \(f returned finite torch.float64 values; the cast "
                                                r"to the distribution's torch.float32 overflowed\)"):
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


# -- edges: dtypes, shapes, generators, foreign distributions, dims, params, empty shapes -----------------------
@pytest.mark.parametrize("make, match", [
    (lambda: sg.Normal(torch.zeros(3), torch.ones(3, dtype=torch.float64)),
     r"Normal: parameters must share one floating dtype; got 'loc' torch.float32, 'scale' torch.float64"),
    (lambda: sg.Gamma(torch.ones(2, dtype=torch.float16), torch.ones(2)),
     r"Gamma: parameters must share one floating dtype; got 'concentration' torch.float16, 'rate' torch.float32"),
    (lambda: sg.Normal(torch.zeros(3), torch.ones(4)),
     r"Normal: parameter shapes must be equal or broadcast .* got 'loc' \[3\], 'scale' \[4\]"),
    (lambda: sg.Uniform(torch.ones(2, 3), torch.zeros(4)), r"Uniform: parameter shapes .* 'low' \[4\], 'high' \[2, 3\]"),
    (lambda: sg.Binomial(torch.tensor([3.0, 4.0, 5.0]), torch.full((4,), 0.5)),
     (r"Binomial: 'total_count' and 'probs' must have equal or broadcastable shapes .* got total_count \[3\] and "
      r"probs \[4\]")),
    (lambda: sg.Normal(torch.zeros(0, 3), 1.0), r"at least one copy of at least one coordinate .* batch_shape \[0\]"),
    (lambda: sg.Normal(torch.zeros(0), torch.ones(0)), r"at least one copy of at least one coordinate .* D = 0"),
    (lambda: sg.Categorical(torch.zeros(3, 0)), r"Categorical: .* at least one coordinate .* with 0 categories"),
])
def test_bad_parameter_dtypes_and_shapes(make, match) -> None:
    with pytest.raises(sg.InvalidArgumentError, match=match) as info:
        make()
    assert isinstance(info.value, ValueError)


def test_python_numbers_take_the_dtype_of_the_tensors() -> None:
    assert sg.Normal(torch.zeros(3, dtype=torch.float64), 1.0).scale.dtype == torch.float64
    assert sg.Normal(0.0, torch.ones(3, dtype=torch.float64)).loc.dtype == torch.float64
    b = sg.Binomial(torch.tensor([[3.0], [4.0]]), torch.full((3,), 0.5))      # broadcast both ways
    assert b.probs.shape == b.total_count.shape == (2, 3)


@pytest.mark.parametrize("generator, match", [
    (42, r"generator: need a torch.Generator or None; got int 42; for a seed, pass torch.Generator\(\).manual_seed\(42\)"),
    ("0", r"generator: need a torch.Generator or None; got str '0'"),
])
@pytest.mark.parametrize("call", ["estimate", "plan"])
def test_a_seed_instead_of_a_generator(generator, match, call) -> None:
    from stochgrad.estimators.registry import estimator_names, make_estimator

    for name in estimator_names():
        est = make_estimator(name, 40, _normal())
        with pytest.raises(sg.InvalidArgumentError, match=match):
            if call == "plan":
                est.plan(_normal(), generator)
            else:
                est.estimate(_f, _normal(), generator=generator)


def test_a_torch_distribution_is_converted() -> None:
    td = torch.distributions
    loc = torch.zeros(3, requires_grad=True)
    for d, family in [(td.Normal(loc, 1.0), sg.Normal), (td.Independent(td.Normal(loc, torch.ones(3)), 1), sg.Normal),
                      (td.Bernoulli(logits=torch.zeros(3)), sg.Bernoulli), (td.Bernoulli(probs=torch.full((3,), 0.3)), sg.Bernoulli),
                      (td.Categorical(logits=torch.zeros(3, 4)), sg.Categorical), (td.Poisson(torch.ones(3)), sg.Poisson),
                      (td.Exponential(torch.ones(3)), sg.Exponential), (td.Gamma(torch.ones(3), 2.0), sg.Gamma),
                      (td.Binomial(5, torch.full((3,), 0.3)), sg.Binomial), (td.Geometric(torch.full((3,), 0.3)), sg.Geometric),
                      (td.Uniform(torch.zeros(3), 2.0), sg.Uniform)]:
        ours = sg.from_torch(d)
        assert type(ours) is family
        x = ours.sample(4, generator=GEN().manual_seed(0))
        assert torch.allclose(ours.log_prob(x), d.log_prob(x) if isinstance(d, td.Independent) else d.log_prob(x).sum(-1))
    assert sg.from_torch(td.Bernoulli(logits=torch.zeros(3))).param_names == ("logits",)
    # estimators and expectation accept them directly, and gradients flow to the torch distribution's tensors
    g = sg.MeasureValued(1).estimate(_f, td.Normal(torch.zeros(3), 1.0), generator=GEN().manual_seed(0))
    assert g.grad["loc"].shape == (3,)
    sg.expectation(_f, td.Normal(loc, 1.0), sg.ScoreFunction(4), generator=GEN().manual_seed(0)).backward()
    assert loc.grad is not None and loc.grad.shape == (3,)


@pytest.mark.parametrize("dist, match", [
    (torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)),
     r"dist: cannot convert torch.distributions.MultivariateNormal; stochgrad has Normal, Bernoulli"),
    (torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2, 3), 1.0), 2),
     r"dist: stochgrad factorises over the last dimension only; got Independent over 2 dimension"),
    ("normal", (r"dist: need a stochgrad family \(sg.Normal, sg.Bernoulli, ...\) or a torch.distributions object "
                r".* got str")),
])
def test_what_cannot_be_a_distribution(dist, match) -> None:
    with pytest.raises(sg.InvalidArgumentError, match=match):
        sg.ScoreFunction(4).estimate(_f, dist, generator=GEN().manual_seed(0))


@pytest.mark.parametrize("dims, match", [
    ({"lco": [0]}, (r"dims: Normal has no parameter 'lco'; the keys of dims must be among its parameters "
                    r"\['loc', 'scale'\]; got keys \['lco'\]")),
    ({"loc": [0], "sclae": [1]}, r"dims: Normal has no parameter 'sclae'"),
])
def test_a_misspelt_key_in_dims(dims, match) -> None:
    est = sg.MeasureValued(1, dims=dims)
    for call in (lambda: est.estimate(_f, _normal(), generator=GEN().manual_seed(0)),
                 lambda: est.plan(_normal(), GEN().manual_seed(0)), lambda: est.n_evals(_normal())):
        with pytest.raises(sg.InvalidArgumentError, match=match):
            call()


def test_duplicated_params() -> None:
    from stochgrad.estimators.registry import estimator_names, make_estimator

    match = r"params: each parameter may be listed once; got \['loc', 'scale', 'loc'\] \('loc' more than once"
    for name in estimator_names():
        with pytest.raises(sg.InvalidArgumentError, match=match):
            make_estimator(name, 40, _normal()).estimate(_f, _normal(), generator=GEN().manual_seed(0),
                                                         params=("loc", "scale", "loc"))
    with pytest.raises(sg.InvalidArgumentError, match=match):
        sg.expectation(_f, _normal(), sg.MeasureValued(1), params=["loc", "scale", "loc"])


@pytest.mark.parametrize("make", [lambda: sg.CCMVD(3, 1, 2), lambda: sg.CCSF(3, 1, 2)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_in_the_hybrids(make, dtype) -> None:
    dist = sg.Normal(torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype))
    with pytest.raises(sg.InvalidArgumentError, match=rf"dist: CC(MVD|SF) needs float32 or float64 parameters .* "
                                                      rf"got Normal with {dtype} parameters"):
        make().estimate(_f, dist, generator=GEN().manual_seed(0))
