"""benchmarks/rl.py: the median over seeds with its bootstrap interval (censored seeds count as infinitely many
episodes), each method's settings, and the starting point of the reward curves."""

from __future__ import annotations

import math

import pytest
from bench_module import load_benchmark

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")


@pytest.fixture(scope="module")
def rl():
    return load_benchmark("rl")


def test_median_counts_a_seed_that_never_reached_as_beyond_the_cap(rl) -> None:
    assert rl.median_interval([100, 200, 150, 300, 250], 1000)[0] == 200
    med, lo, hi = rl.median_interval([100, 200, None, 300, None], 1000)
    assert (med, lo) == (300, 100) and math.isinf(hi)
    med, lo, hi = rl.median_interval([None, None, None, 300, None], 1000)
    assert math.isinf(med) and lo == 300
    assert rl._episodes_text(math.inf, 3000) == "> 3000"


def test_each_method_sets_only_its_estimator_and_ars_draws_independent_directions(rl) -> None:
    ars = rl._config("Hopper-v5", "ars", 0, "serial")
    default = rl._config("Hopper-v5", "default", 0, "serial")
    assert ars.estimator == "ars" and ars.orthogonal() is False and ars.episodes == rl.CAPS["Hopper-v5"] == 3000
    from stochgrad.rl.envs import env_spec

    assert ars.resolved(env_spec("Hopper-v5"))["episodes_per_iter"] == 16           # Hopper's 2N
    assert rl.CAPS["HalfCheetah-v5"] >= 2600
    from stochgrad.rl.trainer import TrainConfig

    assert (default.estimator, default.orthogonal()) == (TrainConfig().estimator, TrainConfig().orthogonal())
    swim = rl._config("Swimmer-v5", "ars", 0, "serial")
    assert swim.resolved(env_spec("Swimmer-v5"))["episodes_per_iter"] == 2           # ARS's N = 1 on Swimmer


def test_the_curve_starts_at_the_starting_policy(rl) -> None:
    row = rl._initial_eval("Swimmer-v5", 0)
    assert row["episodes"] == 0 and math.isfinite(row["eval_return"])


def test_the_common_seeds_measurement_is_deterministic_and_pairs_its_directions() -> None:
    from stochgrad.evaluators import Serial

    from stochgrad.rl.variance import fixed_policy

    crn = load_benchmark("rl_common_seeds")
    policy = fixed_policy("InvertedPendulum-v5", None, 4, 4)
    assert policy[0].tolist() == [0.0] * 4 and policy[2].tolist() == [1.0] * 4
    own = crn.estimates("InvertedPendulum-v5", policy, 3, 4, False, 50, Serial())
    again = crn.estimates("InvertedPendulum-v5", policy, 3, 4, False, 50, Serial())
    common = crn.estimates("InvertedPendulum-v5", policy, 3, 4, True, 50, Serial())
    assert own.shape == (4, 4) and (own == again).all() and not (own == common).all()
