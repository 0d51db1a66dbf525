"""Unbiasedness of every supported (family, parameter, estimator) against exact gradients, by a z-test over
many repeated estimates, and proof that the same test rejects deliberately biased estimators."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from cases import BIAS_FACTORS, CASES, PROBLEMS, UNSUPPORTED, Z_THRESHOLD, Case, repeated_estimates, z_test

REPEATS = 20000
#: The D >= 5 problems: half the repeats (each case is several times costlier; the 20% bias is still seen).
REPEATS_D6 = 10000


def _marked(case: Case):
    """The warmed-up estimates of the stateful estimators on the D >= 5 problems are the longest cases: slow."""
    if case.warmup and case.problem.endswith(("-d5", "-d6")):
        return pytest.param(case, marks=pytest.mark.slow, id=case.id)
    return pytest.param(case, id=case.id)


@pytest.mark.parametrize("case", [_marked(c) for c in CASES])
def test_unbiased(case: Case) -> None:
    """Every registered estimator (and the extra variants) on every family and parameter it supports: the mean
    of 20 000 independent estimates is within Z_THRESHOLD standard errors of the exact gradient (times the
    documented factor of an estimator the registry marks biased), and the same estimates scaled by 0.8 are
    rejected, so each of these tests can fail."""
    exact = PROBLEMS[case.problem].exact_grad()[case.param] * case.factor
    estimates = repeated_estimates(case, REPEATS if "-d" not in case.problem else REPEATS_D6)
    result = z_test(estimates, exact)
    assert result.max_abs_z < Z_THRESHOLD, (
        f"{case.id}: mean {result.mean.tolist()} vs exact {exact.tolist()} (se {result.se.tolist()}, "
        f"z {result.z.tolist()})")
    biased = z_test(0.8 * estimates, exact)
    assert biased.max_abs_z > Z_THRESHOLD, f"{case.id}: a 20% bias went unnoticed (max |z| {biased.max_abs_z:.2f})"


def test_every_registered_estimator_is_z_tested_on_every_parameter_it_supports() -> None:
    from stochgrad.estimators import registry

    tested = {(c.problem, c.param, c.estimator) for c in CASES}
    for name in registry.estimator_names():
        spec = registry.get_spec(name)
        if spec.biased and name not in BIAS_FACTORS:
            continue           # ARS's top b has no closed-form expectation; tests/estimators/test_ars.py rejects it instead
        claimed = {(p, param, name) for p, prob in PROBLEMS.items() for param in prob.params
                   if spec.supports(type(prob.dist()), param)}
        assert claimed and claimed <= tested, name


class Scaled(sg.Estimator):
    """A deliberately biased estimator: another estimator's gradient times a factor."""

    def __init__(self, inner: sg.Estimator, factor: float) -> None:
        self.inner, self.factor = inner, factor

    def n_evals(self, dist, params=None):
        return self.inner.n_evals(dist, params)

    def plan(self, dist, generator=None, params=None):
        plan = self.inner.plan(dist, generator, params)
        original = plan._combine

        def combine(values):
            g = original(values)
            g.grad = {k: v * self.factor for k, v in g.grad.items()}
            return g

        plan._combine = combine
        return plan


#: One case per estimator: the rejection of a biased estimator through the estimator interface (every case
#: above also checks the rejection of its own estimates scaled by 0.8).
ONE_PER_ESTIMATOR = list({c.estimator: c for c in CASES if c.problem.endswith("d6") and not c.warmup}.values())


@pytest.mark.parametrize("case", ONE_PER_ESTIMATOR, ids=[c.id for c in ONE_PER_ESTIMATOR])
def test_z_test_rejects_a_biased_version(case: Case) -> None:
    """The same test, the same repeats: a 20% bias in the same estimator is caught."""
    exact = PROBLEMS[case.problem].exact_grad()[case.param] * case.factor
    biased = Scaled(case.make(), 0.8)
    result = z_test(repeated_estimates(case, REPEATS, estimator=biased), exact)
    assert result.max_abs_z > Z_THRESHOLD, f"{case.id}: a 20% bias went unnoticed (max |z| {result.max_abs_z:.2f})"


@pytest.mark.parametrize("n", [2, 4, 8])
def test_mean_baseline_has_the_documented_bias(n: int) -> None:
    """The "mean" baseline includes f_n in its own baseline: E ĝ = (N − 1)/N · g, and the z-test sees it."""
    case = Case("normal", "loc", f"sf-mean-{n}", lambda: sg.ScoreFunction(n, baseline="mean"))
    exact = PROBLEMS["normal"].exact_grad()["loc"]
    est = repeated_estimates(case, REPEATS)
    assert z_test(est, exact * (n - 1) / n).max_abs_z < Z_THRESHOLD
    assert z_test(est, exact).max_abs_z > Z_THRESHOLD


@pytest.mark.parametrize("case", UNSUPPORTED, ids=[c.id for c in UNSUPPORTED])
def test_unsupported_combinations_raise(case: Case) -> None:
    prob = PROBLEMS[case.problem]
    cls = type(prob.dist())
    only_antithetic = case.estimator.startswith("sf") and case.param in cls.score_params
    with pytest.raises(sg.UnsupportedError, match="symmetric" if only_antithetic else f"{cls.__name__}.{case.param}"):
        case.make().estimate(prob.f, prob.dist(), generator=torch.Generator().manual_seed(0), params=(case.param,))


def test_every_family_and_parameter_has_a_case() -> None:
    covered = {(c.problem, c.param) for c in CASES}
    assert covered == {(name, p) for name, prob in PROBLEMS.items() for p in prob.params}
    families = {type(p.dist()) for p in PROBLEMS.values()}
    assert families == set(sg.distributions.FAMILIES)


def test_mvd_with_dims_is_unbiased_on_the_chosen_components() -> None:
    prob = PROBLEMS["normal"]
    dist = prob.dist(copies=REPEATS)
    dims = torch.stack([torch.randperm(3, generator=torch.Generator().manual_seed(i))[:2] for i in range(REPEATS)])
    g = sg.MeasureValued(1, dims=dims).estimate(prob.f, dist, generator=torch.Generator().manual_seed(3),
                                                params=("loc",))
    assert g.n_evals == 2 * 2
    chosen = g.estimated["loc"]
    assert chosen.sum(-1).eq(2).all()
    exact = prob.exact_grad()["loc"]
    for i in range(3):
        sel = g.grad["loc"][chosen[:, i], i]
        assert z_test(sel[:, None], exact[i:i + 1]).max_abs_z < Z_THRESHOLD
    assert (g.grad["loc"][~chosen] == 0).all()
