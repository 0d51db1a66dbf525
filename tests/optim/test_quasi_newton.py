"""The quasi-Newton search: its gradient estimate (exact for quadratics, unbiased for the ball-smoothed f,
calibrated variance), its L-BFGS memory, the ask/tell optimiser, and ``optimizer="quasi-newton"`` in minimize and
``stochgrad optimize``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stochgrad.cli import main
from stochgrad.errors import EvaluationError, InvalidArgumentError
from stochgrad.lab.functions import FUNCTIONS
from stochgrad.optim import minimize
from stochgrad.optim.ball_gradient import (
    antithetic_points,
    ball_gradient,
    forward_ball_gradient,
    forward_points,
    orthogonal_directions,
)
from stochgrad.optim.lbfgs import LBFGSMemory, as_matrix
from stochgrad.optim.quasi_newton import QuasiNewtonSearch
from stochgrad.optim.search import AskTellError
from stochgrad.runs.files import read_jsonl


def quadratic(dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(dim, dtype=torch.float64)
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    return a, b, (lambda x: 0.5 * ((x @ a) * x).sum(-1) + x @ b)


def test_directions_are_orthonormal_and_uniform_on_the_sphere() -> None:
    gen = torch.Generator().manual_seed(0)
    u = orthogonal_directions(6, 6, gen)
    assert torch.allclose(u @ u.T, torch.eye(6, dtype=torch.float64), atol=1e-12)
    assert orthogonal_directions(4, 10, gen).shape == (10, 4)         # a new matrix per block of 4
    draws = torch.cat([orthogonal_directions(3, 1, gen) for _ in range(20_000)])
    assert draws.mean(0).abs().max() < 0.02                                 # Haar: no preferred sign
    assert torch.allclose(draws.T @ draws / len(draws), torch.eye(3, dtype=torch.float64) / 3, atol=0.01)


@pytest.mark.parametrize("sigma", [1e-3, 0.7, 5.0])
def test_central_differences_over_a_full_frame_are_exact_for_a_quadratic(sigma: float) -> None:
    a, b, f = quadratic(7)
    x = torch.linspace(-1, 2, 7, dtype=torch.float64)
    u = orthogonal_directions(7, 7, torch.Generator().manual_seed(1))
    est = ball_gradient(f(antithetic_points(x, sigma, u)), sigma, u, float(f(x[None])[0]))
    assert torch.allclose(est.grad, a @ x + b, rtol=1e-9, atol=1e-9)
    assert torch.allclose(est.curvature, ((u @ a) * u).sum(-1), rtol=1e-6)
    assert est.variance == 0.0


@pytest.mark.parametrize("differences", ["central", "forward"])
def test_the_estimate_is_unbiased_for_the_ball_smoothed_gradient(differences: str) -> None:
    # f = Σ x⁴: ∇f_σ = 4x³ + 12σ²x / (D + 2) for v uniform in the unit ball (E v_i² = 1/(D + 2)); a Gaussian
    # would give 12σ²x: the test tells the two apart.
    dim, n, sigma, copies = 5, 2, 0.8, 20_000
    x = torch.tensor([0.5, -1.0, 0.2, 1.5, -0.3], dtype=torch.float64)

    def f(z):
        return (z ** 4).sum(-1)

    exact = 4 * x ** 3 + 12 * sigma ** 2 * x / (dim + 2)
    gen = torch.Generator().manual_seed(2)
    grads = []
    for _ in range(copies):
        u = orthogonal_directions(dim, n, gen)
        if differences == "central":
            grads.append(ball_gradient(f(antithetic_points(x, sigma, u)), sigma, u).grad)
        else:
            grads.append(forward_ball_gradient(f(forward_points(x, sigma, u)), sigma, u, float(f(x[None])[0])).grad)
    g = torch.stack(grads)
    z = (g.mean(0) - exact) / (g.std(0) / math.sqrt(copies))
    assert z.abs().max() < 4.0, z
    gaussian = 4 * x ** 3 + 12 * sigma ** 2 * x
    assert ((g.mean(0) - gaussian) / (g.std(0) / math.sqrt(copies))).abs().max() > 6


def test_the_reported_variance_is_calibrated_on_a_linear_f() -> None:
    dim, n, copies = 8, 3, 4000
    w = torch.linspace(-2, 3, dim, dtype=torch.float64)
    x = torch.zeros(dim, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    errors, reported = [], []
    for _ in range(copies):
        u = orthogonal_directions(dim, n, gen)
        est = ball_gradient(antithetic_points(x, 0.5, u) @ w, 0.5, u)
        errors.append(float(((est.grad - w) ** 2).sum()))
        reported.append(est.variance)
    ratio = sum(reported) / sum(errors)
    assert 0.9 < ratio < 1.1, ratio


def test_wrong_numbers_of_values_are_named() -> None:
    u = orthogonal_directions(3, 3, torch.Generator().manual_seed(0))
    with pytest.raises(InvalidArgumentError, match=r"values: need \[6\] \(two per direction\); got \[5\]"):
        ball_gradient(torch.zeros(5), 0.1, u)
    with pytest.raises(InvalidArgumentError, match=r"values: need \[3\] \(one per direction\); got \[6\]"):
        forward_ball_gradient(torch.zeros(6), 0.1, u, 0.0)


def test_lbfgs_keeps_only_positive_curvature_and_meets_the_secant_condition() -> None:
    a, _, _ = quadratic(5, seed=4)
    mem = LBFGSMemory(size=3)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        s = torch.randn(5, generator=gen, dtype=torch.float64)
        assert mem.add(s, a @ s)
    assert len(mem) == 3                                               # the oldest pair was dropped
    assert not mem.add(torch.ones(5, dtype=torch.float64), -torch.ones(5, dtype=torch.float64))
    h = as_matrix(mem, 5, gamma0=1.0)
    assert torch.allclose(h @ mem.y[-1], mem.s[-1], rtol=1e-9)        # H y = s for the newest pair
    assert torch.allclose(h, h.T, atol=1e-10) and bool((torch.linalg.eigvalsh(h) > 0).all())


def test_the_sphere_takes_one_newton_step() -> None:
    # the mean measured curvature is the sphere's curvature, so the first step lands on the minimum
    res = minimize(lambda x: ((x - 0.5) ** 2).sum(-1), torch.full((10,), 3.0, dtype=torch.float64), 1.0,
                   budget=1000, optimizer="quasi-newton", target=1e-20)
    assert res.stop == "target" and res.n_evals == 2 + 21 + 1      # f(x0) twice, a frame and x again, one trial


def test_an_ill_conditioned_quadratic_converges_like_bfgs() -> None:
    a, b, f = quadratic(10, seed=7)
    fmin = float(f(torch.linalg.solve(a, -b)[None])[0])
    res = minimize(f, torch.full((10,), 3.0, dtype=torch.float64), 1.0, budget=2000, optimizer="quasi-newton",
                   target=fmin + 1e-9)
    assert res.stop == "target"
    assert res.n_evals < 20 * (2 * 10 + 3)              # fewer than 20 iterations of a gradient and a few trials


def test_rosenbrock_is_solved_where_snes_defaults_are_not() -> None:
    f = FUNCTIONS["rosenbrock"]
    x0 = torch.zeros(6, dtype=torch.float64)
    qn = minimize(f, x0, 0.5, budget=3000, optimizer="quasi-newton", target=1e-8)
    snes = minimize(f, x0, 0.5, budget=3000, target=1e-8, estimator="sf-antithetic")
    assert qn.stop == "target" and qn.fun <= 1e-8
    assert snes.fun > 1e-8


def test_maximize() -> None:
    res = minimize(lambda x: -((x - 1) ** 2).sum(-1), torch.zeros(3, dtype=torch.float64), 1.0, budget=200,
                   optimizer="quasi-newton", maximize=True)
    assert res.fun > -1e-10 and torch.allclose(res.x, torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_a_multimodal_function_restarts_and_improves() -> None:
    f = FUNCTIONS["rastrigin"]
    opt = QuasiNewtonSearch(torch.full((4,), 1.28, dtype=torch.float64), 1.0, seed=1, patience=5)
    res = minimize(f, None, None, budget=3000, continue_from=opt)
    assert opt.restarts >= 1
    assert res.fun < float(f(torch.full((1, 4), 1.28, dtype=torch.float64))[0])


def test_resume_from_a_state_dict_continues_exactly() -> None:
    f = FUNCTIONS["ackley"]

    def fresh():
        return QuasiNewtonSearch(torch.full((5,), 2.0, dtype=torch.float64), 1.0, seed=3, patience=4)

    full = fresh()
    for _ in range(120):
        full.tell(f(full.ask()))
    cut = fresh()
    for _ in range(50):
        cut.tell(f(cut.ask()))
    resumed = fresh()
    resumed.load_state_dict(cut.state_dict())
    for _ in range(70):
        resumed.tell(f(resumed.ask()))
    assert torch.equal(resumed.x, full.x) and resumed.best_f == full.best_f and resumed.n_evals == full.n_evals
    assert resumed.restarts == full.restarts


def test_ask_tell_misuse_leaves_the_optimiser_unchanged() -> None:
    opt = QuasiNewtonSearch(torch.zeros(3, dtype=torch.float64), 1.0)
    with pytest.raises(AskTellError, match="tell: there are no pending points"):
        opt.tell(torch.zeros(1))
    x = opt.ask()
    with pytest.raises(AskTellError, match="ask: the previous points were not told yet"):
        opt.ask()
    with pytest.raises(AskTellError, match="state_dict: points are pending"):
        opt.state_dict()
    with pytest.raises(EvaluationError, match="NaN"):
        opt.tell(torch.tensor([math.nan, 1.0]))
    opt.tell((x ** 2).sum(-1))                       # the points are still pending after the refused tell
    assert opt.n_evals == 2 and opt.next_evals() == 7


@pytest.mark.parametrize("kwargs, message", [
    ({"directions": 0}, r"directions: need 1..D = 1..3; got 0"),
    ({"directions": 4}, r"directions: need 1..D = 1..3; got 4"),
    ({"differences": "backward"}, r"differences: choose 'central', 'forward' or 'adaptive'; got 'backward'"),
    ({"memory": 0}, r"memory: need an integer >= 1; got 0"),
    ({"sigma_ratio": 2.0}, r"sigma_ratio: must be in \(0, 1\]; got 2.0"),
    ({"sigma_floor": 0.0}, r"sigma_floor: must be in \(0, 1\); got 0.0"),
    ({"patience": 1.5}, r"patience: need an integer >= 1; got 1.5"),
])
def test_bad_settings_are_named(kwargs, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        QuasiNewtonSearch(torch.zeros(3, dtype=torch.float64), 1.0, **kwargs)


def test_bad_start_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match=r"sigma0: must be positive and finite; got -1.0"):
        QuasiNewtonSearch(torch.zeros(3), -1.0)
    with pytest.raises(InvalidArgumentError, match=r"x0: need a non-empty vector \[D\]; got shape \[2, 2\]"):
        QuasiNewtonSearch(torch.zeros(2, 2), 1.0)
    with pytest.raises(InvalidArgumentError, match=r"sigma0: the quasi-Newton search takes one radius; got 3 "
                                                   r"different scales \(from 0.1 to 2\)\. Pass a float, or "
                                                   r"optimizer='natural'"):
        QuasiNewtonSearch(torch.zeros(3), torch.tensor([0.1, 1.0, 2.0]))
    with pytest.raises(InvalidArgumentError, match=r"sigma0: the quasi-Newton search takes one radius"):
        minimize(FUNCTIONS["sphere"], torch.zeros(3), torch.tensor([0.1, 1.0, 2.0]), budget=100)   # staged default
    same = QuasiNewtonSearch(torch.zeros(3), torch.full((3,), 0.5))             # one radius written as a vector
    assert same.sigma0 == 0.5


def test_minimize_refuses_what_quasi_newton_does_not_take() -> None:
    with pytest.raises(InvalidArgumentError, match="estimator: optimizer='quasi-newton' estimates its gradients "
                                                   "itself"):
        minimize(FUNCTIONS["sphere"], torch.zeros(3), 1.0, budget=100, optimizer="quasi-newton", estimator="mvd")
    with pytest.raises(InvalidArgumentError, match="popsize: optimizer='quasi-newton' takes no such option"):
        minimize(FUNCTIONS["sphere"], torch.zeros(3), 1.0, budget=100, optimizer="quasi-newton", popsize=8)


def test_optimize_runs_quasi_newton_and_resumes(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["optimize", "--function", "rosenbrock", "--dim", "4", "--optimizer", "quasi-newton", "--budget", "300",
            "--no-progress", "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["config"]["optimizer"] == "quasi-newton"
    assert main(["optimize", "--out", str(out), "--resume", "--budget", "2000", "--no-progress"]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert rows[-1]["n_evals"] > 300 and rows[-1]["best_f"] < rows[0]["best_f"]
    assert (out / "plots" / "convergence.png").stat().st_size > 0
    assert "quasi-newton" in (out / "summary.md").read_text()
    assert main(["optimize", "--optimizer", "quasi-newton", "--popsize", "8", "--no-progress", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "optimizer: quasi-newton estimates its own gradients; --popsize does not apply to it" in \
        capsys.readouterr().err


def test_a_deterministic_f_is_seen_as_noise_free_and_rarely_rechecked() -> None:
    f = FUNCTIONS["rosenbrock"]
    opt = QuasiNewtonSearch(torch.zeros(4, dtype=torch.float64), 0.5, seed=0, differences="central")
    sizes = []
    for _ in range(200):
        phase = opt.phase
        x = opt.ask()
        opt.tell(f(x))
        if phase == "gradient":
            sizes.append(x.shape[0])
    assert opt.noise == 0.0
    assert sizes[:2] == [9, 9] and sizes.count(9) < len(sizes) / 3       # x again on few gradients only


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_the_noise_estimate_follows_the_noise_model(kind: str) -> None:
    gen = torch.Generator().manual_seed(1)

    def f(x):
        clean = (5.0 if kind == "additive" else 0.0) + (x ** 2).sum(-1)    # multiplicative: ε vanishes with f
        e = torch.randn(x.shape[0], generator=gen, dtype=x.dtype)
        return clean + 0.1 * e if kind == "additive" else clean * (1 + 0.1 * e)

    opt = QuasiNewtonSearch(torch.ones(3, dtype=torch.float64), 0.5, seed=0)
    ratios = []
    for _ in range(1500):
        opt.tell(f(opt.ask()))
        if len(opt.noise_samples) == opt.NOISE_WINDOW and opt.phase == "gradient":
            want = 0.1 if kind == "additive" else 0.1 * abs(opt.fx)
            ratios.append(opt.noise / want)
    ratios = torch.tensor(ratios)
    assert len(ratios) > 10 and 0.7 < float(ratios.median()) < 1.4, ratios.median()


def test_on_a_noisy_f_more_frames_are_used_near_the_minimum_and_it_beats_ranked_snes() -> None:
    gen = torch.Generator().manual_seed(2)

    def f(x):
        return (x ** 2).sum(-1) + 0.01 * torch.randn(x.shape[0], generator=gen, dtype=x.dtype)

    x0 = torch.full((5,), 2.0, dtype=torch.float64)
    opt = QuasiNewtonSearch(x0, 1.0, seed=0)
    frames = []

    def watch(o, row):
        frames.append(o.frames)

    qn = minimize(f, None, None, budget=6000, continue_from=opt, callback=watch)
    snes = minimize(f, x0, 1.0, budget=6000, estimator="sf-antithetic")
    assert max(frames) > 1 and frames[0] == 1
    assert float((qn.x ** 2).sum()) < 0.1 * float((snes.x ** 2).sum())


def test_adaptive_differences_go_forward_where_the_predicted_bias_is_small_and_save_evaluations() -> None:
    f = FUNCTIONS["rosenbrock"]
    x0 = torch.zeros(10, dtype=torch.float64)
    opt = QuasiNewtonSearch(x0, 0.5, seed=0)
    modes = []
    while opt.n_evals < 3000 and opt.best_f > 1e-10:
        phase = opt.phase
        x = opt.ask()
        if phase == "gradient":
            modes.append(opt.mode)
            assert x.shape[0] in ((20 if opt.mode == "central" else 10), (21 if opt.mode == "central" else 11))
        opt.tell(f(x))
    assert modes[0] == "central" and modes.count("forward") > len(modes) / 2
    assert all("central" in modes[i:i + 10] for i in range(len(modes) - 9))      # c_i refreshed every 10th
    central = minimize(f, x0, 0.5, budget=3000, target=1e-10, optimizer="quasi-newton", differences="central")
    assert opt.best_f <= 1e-10 and central.stop == "target" and opt.n_evals < 0.8 * central.n_evals


def test_adaptive_differences_stay_central_on_a_noisy_f() -> None:
    gen = torch.Generator().manual_seed(3)

    def f(x):
        return (x ** 2).sum(-1) + 0.01 * torch.randn(x.shape[0], generator=gen, dtype=x.dtype)

    opt = QuasiNewtonSearch(torch.ones(4, dtype=torch.float64), 0.5, seed=0)
    modes = []
    for _ in range(300):
        if opt.phase == "gradient":
            modes.append(opt.next_differences())
        opt.tell(f(opt.ask()))
    assert opt.noise > 0 and set(modes) == {"central"}
