"""Rollouts, the normaliser, the policy and the trainer's ARS V2-t step, piece by piece."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stochgrad as sg
from stochgrad.optim.search import SearchGradient
from stochgrad.rl.envs import RLEnvironmentError, env_spec
from stochgrad.rl.normalizer import RunningNormalizer, StateStats
from stochgrad.rl.policy import LinearPolicy
from stochgrad.rl.rollout import Episode, episode_seed, run_episode
from stochgrad.rl.trainer import build_estimator, scale_returns

FAULTY = "rl_test_envs:FaultyPendulum-v0"


def _episode(env: str = "Hopper-v5", seed: int = 7, w_scale: float = 0.1, **kw) -> Episode:
    spec = env_spec(env, None, **kw)
    w = np.random.default_rng(0).normal(0, w_scale, spec.n_params)
    return Episode(env, w, np.zeros(spec.obs_dim), np.ones(spec.obs_dim), np.array(spec.low), np.array(spec.high),
                   seed, spec.max_episode_steps, shift=1.0, env_kwargs=kw)


def test_mujoco_tasks_have_the_parameter_counts_of_the_issue() -> None:
    counts = {e: env_spec(e).n_params for e in ("Swimmer-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")}
    assert counts == {"Swimmer-v5": 16, "Hopper-v5": 33, "HalfCheetah-v5": 102, "Walker2d-v5": 102}


def test_a_rollout_depends_on_its_seed_only() -> None:
    a, b, c = run_episode(_episode(seed=7)), run_episode(_episode(seed=7)), run_episode(_episode(seed=8))
    assert (a.ret, a.length) == (b.ret, b.length)
    assert np.array_equal(a.states.mean, b.states.mean)
    assert a.ret != c.ret
    # the shift is per step, and the return itself is never shifted
    assert a.shifted_return == pytest.approx(a.ret - a.length)
    # states seen: the reset state and every state the policy acted on
    assert a.states.count == a.length


def test_episode_seeds_are_distinct_across_iterations_indices_and_streams() -> None:
    seeds = {episode_seed(0, it, i, s) for it in range(20) for i in range(20) for s in range(3)}
    assert len(seeds) == 20 * 20 * 3
    assert episode_seed(3, 1, 2) == episode_seed(3, 1, 2) != episode_seed(4, 1, 2)


def test_normaliser_merges_exactly_and_is_frozen_until_updated() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.normal(3.0, 2.0, (n, 4)) for n in (5, 1, 17, 9)]
    norm = RunningNormalizer(4)
    assert np.array_equal(norm.frozen()[0], np.zeros(4)) and np.array_equal(norm.frozen()[1], np.ones(4))
    for p in parts:
        norm.update(StateStats.of(p))
    allx = np.concatenate(parts)
    mean, std = norm.frozen()
    assert np.allclose(mean, allx.mean(0)) and np.allclose(std, allx.std(0, ddof=1))
    # constant coordinates are mapped to 0 (std -> inf), as in ARS
    const = RunningNormalizer(2)
    const.update(StateStats.of(np.array([[1.0, 2.0], [1.0, 3.0]])))
    assert np.isinf(const.frozen()[1][0])
    pol = LinearPolicy(np.ones((1, 2)), *const.frozen(), np.array([-10.0]), np.array([10.0]))
    assert pol(np.array([5.0, 2.5])) == pytest.approx([0.0])
    restored = RunningNormalizer(4)
    restored.load_state_dict(norm.state_dict())
    assert np.array_equal(restored.frozen()[1], std)


def test_policy_clips_or_passes_actions() -> None:
    w = np.array([[2.0, 0.0]])
    args = (np.zeros(2), np.ones(2), np.array([-1.0]), np.array([1.0]))
    assert LinearPolicy(w, *args)(np.array([3.0, 0.0])) == pytest.approx([1.0])
    assert LinearPolicy(w, *args, actions="raw")(np.array([3.0, 0.0])) == pytest.approx([6.0])
    with pytest.raises(sg.InvalidArgumentError, match="actions"):
        LinearPolicy(w, *args, actions="tanh")


@pytest.mark.parametrize("what", ["observation", "reward"])
def test_nan_from_the_environment_names_it_and_the_step(what: str) -> None:
    ep = _episode(FAULTY, seed=11, nan_seed=11, nan_step=4, what=what)
    with pytest.raises(RLEnvironmentError, match=rf"rl_test_envs:FaultyPendulum-v0 returned a non-finite {what}.*"
                                                 r"at step 4 of the episode with seed 11"):
        run_episode(ep)
    run_episode(_episode(FAULTY, seed=12, nan_seed=11, nan_step=4, what=what))   # other episodes are fine


def test_the_trainers_step_is_ars_v2t_update() -> None:
    """Mania et al. 2018, V2-t: Δθ = α/(b σ_R) Σ_{top b} (r⁺ − r⁻) δ, σ_R the std of the 2b returns used; what the
    trainer does generically: the registry's ARS, ``used`` for the scaling, a plain step of lr = α·2σ."""
    N, b, alpha, sigma = 6, 3, 0.02, 0.03
    dist = sg.Normal(torch.zeros(4, dtype=torch.float64), torch.full((4,), sigma, dtype=torch.float64))
    search = SearchGradient(torch.zeros(4, dtype=torch.float64), sigma, estimator=build_estimator("ars", 2 * N, dist, b),
                            optimizer="sgd", lr=alpha * 2 * sigma, maximize=True, seed=3)
    points = search.ask()
    r = -((points - torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)) ** 2).sum(-1) + points[:, 0] ** 3
    used = search.used(r)
    search.tell(scale_returns(r, "std", used))
    delta = (points[:N] - points[N:]) / (2 * sigma)                       # δ_k, from μ ± σδ_k with μ = 0
    best = torch.maximum(r[:N], r[N:]).argsort(descending=True)[:b]
    keep = torch.zeros(2 * N, dtype=torch.bool)
    keep[best], keep[best + N] = True, True
    assert torch.equal(used, keep)
    sigma_r = r[keep].std(correction=0)
    expect = alpha / (b * sigma_r) * ((r[:N] - r[N:])[best].unsqueeze(-1) * delta[best]).sum(0)
    assert torch.allclose(search.loc.detach(), expect, rtol=1e-12, atol=1e-15)


def test_docs_table_of_ars_settings_is_the_code() -> None:
    from pathlib import Path

    from stochgrad.rl.tasks import TASKS

    text = (Path(__file__).resolve().parents[2] / "docs" / "rl.md").read_text()
    for t in TASKS.values():
        row = (f"| {t.env_id} | {t.step_size:g} | {t.noise:g} | {t.directions} | {t.top} | {t.shift:g} | "
               f"{t.threshold:g} |")
        assert row in text, row


def test_relative_reduction_measures_variance_on_the_chosen_components() -> None:
    from stochgrad.rl.variance import relative_reduction

    rng = np.random.default_rng(0)
    R, D, g = 4000, 6, np.arange(6.0)
    sf = g + rng.normal(0, 2.0, (R, D))
    chosen = np.zeros((R, D), dtype=bool)
    chosen[np.arange(R), rng.integers(0, D, R)] = True
    # a quarter of the variance where chosen (noisier elsewhere: must not count), the same variance: about 0
    better = g + rng.normal(0, 2.0, (R, D)) * np.where(chosen, 0.5, 3.0)
    same = g + rng.normal(0, 2.0, (R, D))
    assert relative_reduction(better, chosen, sf, g, boot=20)[0] == pytest.approx(0.75, abs=0.05)
    assert relative_reduction(same, chosen, sf, g, boot=20)[0] == pytest.approx(0.0, abs=0.08)
