"""Gradient diagnostics: the statistics on known inputs, projections, and a measurement on the tiny model."""

from __future__ import annotations

import json

import math

import pytest
import torch

from stochgrad.cli import main
from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
from stochgrad.rlhf.diagnostics import gradient_stats, measure, project
from stochgrad.rlhf.estimators import estimator_config
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import VaderReward


def test_statistics_recover_a_known_mean_and_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([3.0, 0.0, -4.0, 0.0])
    sd = torch.tensor([1.0, 2.0, 0.5, 0.0])
    x = mean + sd * torch.randn(20000, 4, generator=g, dtype=torch.float64)
    s = gradient_stats(x)
    assert s["trace_variance"] == pytest.approx(float((sd ** 2).sum()), rel=0.03)
    assert s["mean_norm_sq"] == pytest.approx(25.0, rel=0.01)
    assert s["relative_variance"] == pytest.approx(5.25 / 25, rel=0.04)
    # E cos(x, μ) for x ~ N(μ, Σ), by Monte Carlo on fresh draws.
    y = mean + sd * torch.randn(20000, 4, generator=g, dtype=torch.float64)
    assert s["cosine"] == pytest.approx(float(torch.nn.functional.cosine_similarity(y, mean[None]).mean()), abs=0.01)


def test_the_bootstrap_standard_error_matches_the_spread_over_independent_runs() -> None:
    g = torch.Generator().manual_seed(2)
    mean, sd = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([1.0, 2.0, 1.0])
    runs = [gradient_stats(mean + sd * torch.randn(30, 3, generator=g, dtype=torch.float64), bootstrap=100, seed=i)
            for i in range(60)]
    spread = float(torch.tensor([r["relative_variance"] for r in runs]).std())
    typical_se = float(torch.tensor([r["relative_variance_se"] for r in runs]).median())
    assert 0.5 < typical_se / spread < 2.0


def test_random_projections_preserve_norms_and_are_fixed() -> None:
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(50, 40, generator=g), torch.randn(300, generator=g)]
    a, b = project(grads, 256, seed=3), project(grads, 256, seed=3)
    assert torch.equal(a, b)
    norm_sq = sum(float((t.double() ** 2).sum()) for t in grads)
    assert float(a @ a) == pytest.approx(norm_sq, rel=4 * math.sqrt(2 / 256))
    assert torch.allclose(project(grads, 8, seed=3), a[:8] * math.sqrt(256 / 8), atol=1e-9)   # rows fixed
    assert not torch.allclose(project(grads, 8, seed=4), a[:8] * math.sqrt(256 / 8))


def test_measure_on_the_tiny_model(tiny_model_dir) -> None:
    policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=8)
    ref = policy.reference()
    stats = {n: measure(policy, ref, VaderReward(), TRAIN_PROMPTS, estimator_config(n), 8, 6, name=n)
             for n in ("reinforce", "rloo")}
    for s in stats.values():
        assert s.completions == 8 and s.repeats == 6 and s.trace_variance > 0 and -1 <= s.cosine <= 1
    before = [p.clone() for p in policy.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(before, policy.parameters()))     # the policy is unchanged
    proj = measure(policy, ref, VaderReward(), TRAIN_PROMPTS, estimator_config("rloo"), 8, 4, projections=16)
    assert proj.projections == 16 and proj.trace_variance > 0


def test_the_variance_command(tiny_model_dir, capsys, tmp_path) -> None:
    run = tmp_path / "var"
    args = ["rlhf", "variance", "--model", str(tiny_model_dir), "--estimators", "rloo,grpo", "--completions", "8",
            "--repeats", "3", "--max-new-tokens", "6", "--no-progress", "--out", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "rloo" in out and "grpo" in out and "cos to mean" in out
    saved = json.loads((run / "variance.json").read_text())
    assert [s["name"] for s in saved] == ["rloo", "grpo"] and saved[0]["repeats"] == 3
    assert (run / "plots" / "relative_variance.png").read_bytes()[:4] == b"\x89PNG"
    assert "cos to mean" in (run / "summary.md").read_text()
    assert main([*args, "--resume"]) == 0                              # finished: the same table again
    assert capsys.readouterr().out == out.replace(str(run), str(run))
    bad = tmp_path / "bad"
    assert main(["rlhf", "variance", "--model", str(tiny_model_dir), "--estimators", "rloo", "--completions",
                 "6", "--repeats", "3", "--no-progress", "--out", str(bad)]) == 2
    assert "completions: 6 sampled completions per estimate is not a multiple of k=4" in capsys.readouterr().err
    assert not bad.exists()


def test_an_interrupted_variance_run_resumes_to_the_same_numbers(tiny_model_dir, tmp_path) -> None:
    from stochgrad.rlhf.variance import RLHF_VARIANCE, VarianceConfig, run_variance
    from stochgrad.runs import run

    cfg = dict(model=str(tiny_model_dir), estimators=["rloo", "grpo"], completions=8, repeats=3, max_new_tokens=6)
    full, _ = run_variance(VarianceConfig(**cfg), tmp_path / "full", progress=False)

    def stop(experiment, row):
        raise KeyboardInterrupt                       # after the first estimator

    with pytest.raises(KeyboardInterrupt):
        run(RLHF_VARIANCE, VarianceConfig(**cfg), tmp_path / "cut", progress=False, callback=stop)
    again, _ = run_variance(VarianceConfig(**cfg), tmp_path / "cut", resume=True, progress=False)
    drop = ("seconds_per_estimate",)
    assert [{k: v for k, v in s.items() if k not in drop} for s in again] == \
        [{k: v for k, v in s.items() if k not in drop} for s in full]
