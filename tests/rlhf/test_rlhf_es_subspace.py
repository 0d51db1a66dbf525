"""The library's estimators over a random subspace θ = θ0 + P·z: P regenerated from the seed, unbiased for the
smoothed gradient (z-test that rejects ×0.8 and the wrong sign), the train command, named errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stochgrad.cli import main
from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.rlhf.es.subspace import Subspace, SubspaceSearch, subspace_estimators
from stochgrad.rlhf.trainer import TrainConfig, run_train
from stochgrad.runs.files import load_checkpoint, read_jsonl

SHAPES = [(3, 4), (3, 4), (4,)]
VOLATILE = ("seconds", "cpu_seconds")


def test_the_subspace_is_a_fixed_map_regenerated_from_its_seed() -> None:
    sub = Subspace(SHAPES, dim=5, seed=3)
    z = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = sub.matrix()
    assert p.shape == (28, 5)
    disp = torch.cat([sub.displacement(i, z).flatten() for i in range(3)])
    assert torch.allclose(disp, (p @ z).float(), atol=1e-6)
    assert torch.equal(disp, torch.cat([sub.displacement(i, z).flatten() for i in range(3)]))
    # blocks of the same shape differ (seeded per tensor), entries have variance 1/k
    assert not torch.allclose(p[:12], p[12:24])
    big = Subspace([(200, 50)], dim=4, seed=1).matrix()
    assert abs(float(big.var()) * 4 - 1) < 0.05
    assert not torch.equal(Subspace(SHAPES, 5, seed=4).matrix(), p)


def problem(estimator: str, population: int, dim: int = 4, sigma: float = 0.4):
    gen = torch.Generator().manual_seed(0)
    theta0 = [torch.randn(s, generator=gen) for s in SHAPES]
    coef = torch.randn(28, generator=gen, dtype=torch.float64)
    search = SubspaceSearch(theta0, dim=dim, sigma=sigma, estimator=estimator, population=population, seed=0)
    with torch.no_grad():
        search.loc.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1][:dim], dtype=torch.float64))
    return search, theta0, coef


def exact_gradient(search, theta0, coef) -> torch.Tensor:
    # F(θ) = Σ_c a_c sin θ_c with θ = θ0 + P z, z ~ N(μ, s²I): θ_c ~ N(m_c, s²‖P_c‖²), so
    # E F = Σ_c a_c exp(−s²‖P_c‖²/2) sin m_c and ∇_μ E F = Pᵀ (a ⊙ exp(−s²‖P_c‖²/2) ⊙ cos m).
    p = search.subspace.matrix()
    m = torch.cat([t.flatten().double() for t in theta0]) + p @ search.loc.detach()
    damp = torch.exp(-search.sigma ** 2 * (p ** 2).sum(1) / 2)
    return p.T @ (coef * damp * torch.cos(m))


def max_abs_z(estimates: torch.Tensor, exact: torch.Tensor) -> float:
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    return float(((estimates.mean(0) - exact) / se).abs().max())


@pytest.mark.parametrize("estimator", ["sf-antithetic", "sf-loo", "auto"])
def test_a_registered_estimator_over_the_subspace_is_unbiased_and_the_test_can_fail(estimator) -> None:
    search, theta0, coef = problem(estimator, population=16)
    exact = exact_gradient(search, theta0, coef)
    p = search.subspace.matrix()
    base = torch.cat([t.flatten().double() for t in theta0])
    z0 = torch.tensor([0.1, 0.2, -0.3, 0.4], dtype=torch.float64)
    assert torch.allclose(torch.cat([v.flatten() for v in search.values(z0)]).double(), base + p @ z0, atol=1e-5)
    gen = torch.Generator().manual_seed(1)
    est = []
    for _ in range(1500):
        plan = search.plan(gen)
        fitness = (torch.sin(base + plan.points @ p.T) * coef).sum(1)      # F at θ0 + P z, for each member
        direction, g = search.combine(plan, fitness)
        search.update(g)
        est.append(direction)
    est = torch.stack(est)
    # 4 components, |z| < 4.5 each: a false alarm has probability below 4 · 6.8e-6
    assert max_abs_z(est, exact) < 4.5
    assert max_abs_z(0.8 * est, exact) > 4.5
    assert max_abs_z(-est, exact) > 4.5


def small(model, **kw) -> TrainConfig:
    base = {"model": str(model), "estimator": "subspace", "population": 8, "sigma": 0.02, "subspace_dim": 4,
            "completions_per_step": 16, "steps": 4, "lr": 1e-2, "max_new_tokens": 6, "checkpoint_every": 2,
            "sample_every": 2, "seed": 3, "beta": 0.05}
    base.update(kw)
    return TrainConfig(**base)


def strip(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_subspace_training_moves_the_model_within_the_subspace_and_resumes_exactly(tmp_path, tiny_model_dir) -> None:
    straight = run_train(small(tiny_model_dir, subspace_estimator="auto"), tmp_path / "straight", progress=False)

    def interrupt(experiment, record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_train(small(tiny_model_dir, subspace_estimator="auto"), out, progress=False, callback=interrupt)
    resumed = run_train(small(tiny_model_dir, subspace_estimator="auto"), out, resume=True, progress=False)
    assert strip(resumed.records) == strip(straight.records)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["experiment"]
    b = load_checkpoint(out / "checkpoint.pt")["experiment"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the weights are θ0 + P·μ: the run's μ reproduces them from the starting model
    from stochgrad.rlhf.es.step import trainable
    from stochgrad.rlhf.policy import Policy

    start = Policy.from_pretrained(str(tiny_model_dir))
    names, params = trainable(start)
    search = SubspaceSearch(params, dim=4, sigma=0.02, estimator="auto", population=8, seed=3)
    loc = a["subspace"]["loc"]
    assert loc.shape == (4,) and bool(loc.abs().sum() > 0)
    for name, value in zip(names, search.values(loc)):
        assert torch.equal(a["model"][name], value), name
    assert {"fitness_std", "grad_norm", "reward_mean"} <= set(straight.records[-1])


def test_the_train_command_with_subspace(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "cli"
    args = ["rlhf", "train", "--model", str(tiny_model_dir), "--estimator", "subspace", "--subspace-dim", "3",
            "--subspace-estimator", "sf-antithetic", "--population", "4", "--sigma", "0.01",
            "--completions-per-step", "8", "--steps", "2", "--max-new-tokens", "5", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["subspace_dim"], saved["subspace_estimator"]) == (3, "sf-antithetic")
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert "sf-antithetic over a 3-dimensional subspace" in (out / "summary.md").read_text()


def test_bad_subspace_input_gets_a_named_error(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "never"
    with pytest.raises(InvalidArgumentError, match="subspace_estimator: got 'pathwise'; choose a black-box"):
        run_train(small(tiny_model_dir, subspace_estimator="pathwise"), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="subspace_dim: need an integer k >= 1; got 0"):
        run_train(small(tiny_model_dir, subspace_dim=0), out, progress=False)
    with pytest.raises(BudgetError, match="population: sf-antithetic uses 6 of 7 evaluations"):
        run_train(small(tiny_model_dir, subspace_estimator="sf-antithetic", population=7,
                        completions_per_step=14), out, progress=False)
    with pytest.raises(BudgetError, match="population: sf-loo needs at least 2 evaluations per estimate"):
        run_train(small(tiny_model_dir, subspace_estimator="sf-loo", population=1, completions_per_step=4), out,
                  progress=False)
    with pytest.raises(InvalidArgumentError, match="sigma: need a finite scale > 0"):
        run_train(small(tiny_model_dir, sigma=0.0), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="subspace_dim: an option of --estimator subspace"):
        run_train(small(tiny_model_dir, estimator="es", subspace_dim=4), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="rank: an option of es-lowrank"):
        run_train(small(tiny_model_dir, rank=2), out, progress=False)
    with pytest.raises(BudgetError, match="completions_per_step: 12 is not a multiple of population=8"):
        run_train(small(tiny_model_dir, completions_per_step=12), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="evaluator: Ray workers evaluate ES population members"):
        run_train(small(tiny_model_dir, evaluator="ray"), out, progress=False)
    assert not out.exists()
    assert "pathwise" not in subspace_estimators() and {"sf-antithetic", "auto", "ars"} <= set(subspace_estimators())
