"""Seeded ES noise and the ES estimate, without a language model: independence, determinism, unbiasedness."""

from __future__ import annotations

import math

import pytest
import torch

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.rlhf.es import EsConfig, SeededNoise, pair_weights, perturbed, shape_fitness, tensor_seed, write_gradient


def correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


@pytest.mark.parametrize("rank", [0, 2])
def test_same_shape_tensors_get_independent_noise(rank) -> None:
    # 300 members × 64 entries = 19 200 pairs of entries: under independence the sample correlation has a
    # standard deviation of 1/sqrt(19 200) = 0.0072, so |corr| < 5/sqrt(n) = 0.036 fails by chance with
    # probability below 1e-6. Noise that one seed drives for every layer (the published code's habit) has
    # correlation 1 here.
    noise = SeededNoise([(8, 8), (8, 8), (8,)], rank=rank)
    a = torch.cat([noise.noise(s, 0).flatten() for s in range(300)])
    b = torch.cat([noise.noise(s, 1).flatten() for s in range(300)])
    n = a.numel()
    assert abs(correlation(a, b)) < 5 / math.sqrt(n)
    assert abs(float(a.mean())) < 5 / math.sqrt(n)
    # Unit variance per entry, low rank included. Entries of one low-rank matrix are dependent, so the tolerance
    # is 5 standard errors of the mean square computed over the 300 independent members.
    squares = (a.reshape(300, -1) ** 2).mean(1)
    assert abs(float(squares.mean()) - 1) < 5 * float(squares.std()) / math.sqrt(300)
    one_seed = OneSeedPerMember([(8, 8), (8, 8), (8,)], rank=rank)
    a = torch.cat([one_seed.noise(s, 0).flatten() for s in range(300)])
    b = torch.cat([one_seed.noise(s, 1).flatten() for s in range(300)])
    assert correlation(a, b) > 0.99              # the check fails for noise seeded by the member alone


class OneSeedPerMember(SeededNoise):
    """The published code's habit, for contrast: every tensor's noise from the member seed alone."""

    def generator(self, seed: int, index: int) -> torch.Generator:
        return super().generator(seed, 0)


def test_noise_is_a_function_of_the_seed_and_the_tensor() -> None:
    noise = SeededNoise([(5, 3), (5, 3)], rank=0)
    assert torch.equal(noise.noise(7, 0), noise.noise(7, 0))
    assert not torch.equal(noise.noise(7, 0), noise.noise(7, 1))
    assert not torch.equal(noise.noise(7, 0), noise.noise(8, 0))
    # torch's CPU generator keeps 32 bits of a seed: the tensors of one member never collide there.
    assert len({tensor_seed(123, i) for i in range(1000)}) == 1000
    low = SeededNoise([(5, 3)], rank=2)
    assert torch.linalg.matrix_rank(low.noise(7, 0)) == 2


def test_bad_input_gets_a_named_error() -> None:
    with pytest.raises(BudgetError, match="population: need an even number >= 2.*got 1"):
        EsConfig(population=1).validate()
    with pytest.raises(BudgetError, match="population: .*got 5"):
        EsConfig(population=5).validate()
    for sigma in (0.0, -0.1, float("nan")):
        with pytest.raises(InvalidArgumentError, match="sigma: need a finite perturbation scale > 0"):
            EsConfig(sigma=sigma).validate()
    with pytest.raises(InvalidArgumentError, match="es_shaping: got 'ranks'"):
        EsConfig(shaping="ranks").validate()
    with pytest.raises(InvalidArgumentError, match=r"rank: 4 exceeds min\(m, n\) = 3 of the weight matrix 'w'"):
        SeededNoise([(5, 3)], rank=4, names=["w"])
    with pytest.raises(InvalidArgumentError, match="rank: need an integer >= 0"):
        SeededNoise([(5, 3)], rank=-1)


def test_shaping() -> None:
    f = torch.tensor([3.0, -1.0, 10.0, 3.0])
    assert shape_fitness(f, "centred-ranks").tolist() == [0.0, -0.5, 0.5, 0.0]
    z = shape_fitness(f, "z-score")
    assert abs(float(z.mean())) < 1e-12 and abs(float(z.std()) - 1) < 1e-6
    assert torch.equal(shape_fitness(f, "none"), f.double())
    assert pair_weights(torch.tensor([1.0, 0.5, -1.0, 2.0])).tolist() == [0.5, -3.0]


# A reward of three tensors (two of the same shape) whose Gaussian-smoothed gradient is known in closed form:
# F(θ) = Σ_k a_k sin(θ_k), E F(θ + σε) = e^{−σ²/2} Σ_k a_k sin(θ_k), so ∇ = e^{−σ²/2} a ⊙ cos θ. The two
# same-shape tensors have different a, so noise shared between them would bias both.
SHAPES = [(3, 4), (3, 4), (4,)]


def problem():
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in SHAPES]
    coef = [torch.randn(s, generator=gen) for s in SHAPES]
    return params, coef


def es_estimates(params, coef, reward, rank: int, repeats: int, sigma: float, population: int) -> torch.Tensor:
    """``[repeats, D]`` ascent directions −grad written by :func:`write_gradient`, shaping 'none'."""
    noise = SeededNoise(SHAPES, rank=rank)
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(repeats):
        seeds = torch.randint(2 ** 62, (population // 2,), generator=gen).tolist()
        fitness = torch.stack([reward(perturbed(params, noise, s, sign * sigma), coef)
                               for s in seeds for sign in (1.0, -1.0)])
        write_gradient(params, noise, seeds, pair_weights(shape_fitness(fitness, "none")), sigma, population)
        out.append(torch.cat([-p.grad.flatten() for p in params]))
    return torch.stack(out)


def sine(theta, coef):
    return sum((a * torch.sin(t)).sum() for t, a in zip(theta, coef))


def quadratic(theta, coef):
    return sum((a * t + 0.5 * a.abs() * t ** 2).sum() for t, a in zip(theta, coef))


def max_abs_z(estimates: torch.Tensor, exact: torch.Tensor) -> float:
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    return float(((estimates.mean(0) - exact) / se).abs().max())


@pytest.mark.parametrize("rank, reward", [(0, "sine"), (2, "quadratic")])
def test_the_es_estimate_is_unbiased_and_the_test_can_fail(rank, reward) -> None:
    # Full-rank Gaussian noise: the exact smoothed gradient of the sine reward. Low-rank noise is not Gaussian,
    # so Stein's lemma does not give its smoothed gradient; but Cov ε = I and antithetic pairs make the estimate
    # unbiased for the gradient of a quadratic, which is what we check there. 28 components, |z| < 4.5 each:
    # a false alarm has probability below 28 · 6.8e-6 = 2e-4.
    params, coef = problem()
    sigma = 0.5
    theta = torch.cat([p.detach().flatten() for p in params])
    a = torch.cat([c.flatten() for c in coef])
    if reward == "sine":
        fn, exact = sine, math.exp(-sigma ** 2 / 2) * a * torch.cos(theta)
    else:
        fn, exact = quadratic, a + a.abs() * theta
    est = es_estimates(params, coef, fn, rank, repeats=1500, sigma=sigma, population=8)
    assert max_abs_z(est, exact) < 4.5
    assert max_abs_z(0.8 * est, exact) > 4.5         # a 20% bias is seen
    assert max_abs_z(-est, exact) > 4.5              # so is the wrong sign (descent instead of ascent)


def test_full_rank_noise_is_drawn_in_chunks_that_every_consumer_draws_alike(monkeypatch) -> None:
    import stochgrad.rlhf.es.noise as noise_module

    small = SeededNoise([(7, 5), (3,)], rank=0)
    # A tensor of at most one chunk is a plain randn of its shape from its generator.
    assert torch.equal(small.noise(3, 0), torch.randn((7, 5), generator=small.generator(3, 0)))
    monkeypatch.setattr(noise_module, "CHUNK", 8)      # 35 entries: chunks of 8, 8, 8, 8 and 3
    noise = SeededNoise([(7, 5), (3,)], rank=0)
    eps = noise.noise(3, 0)
    assert torch.equal(eps, noise.noise(3, 0))
    base = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noise.perturb(3, 0, base, -0.01), base + -0.01 * eps)
    acc = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(noise.add_noise(3, 0, acc.clone(), 0.7), acc.clone().add_(eps, alpha=0.7))
    # Chunks are independent standard normals: over 2000 members, chunk 0 against chunk 3 and the moments.
    draws = torch.stack([noise.noise(s, 0).flatten() for s in range(2000)])          # [2000, 35]
    n = draws[:, :8].numel()
    assert abs(correlation(draws[:, :8].flatten(), draws[:, 24:32].flatten())) < 5 / math.sqrt(n)
    assert abs(float(draws.mean())) < 5 / math.sqrt(draws.numel())
    assert abs(float(draws.var()) - 1) < 5 * math.sqrt(2 / draws.numel())


def test_the_gradient_of_chunked_noise_is_the_weighted_sum_of_the_members_noise(monkeypatch) -> None:
    import stochgrad.rlhf.es.noise as noise_module

    monkeypatch.setattr(noise_module, "CHUNK", 16)
    noise = SeededNoise([(9, 6), (4,)], rank=0)
    params = [torch.zeros(9, 6, requires_grad=True), torch.zeros(4, requires_grad=True)]
    seeds, weights = [5, 11, 17], torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
    write_gradient(params, noise, seeds, weights, sigma=0.1, population=6)
    for i, p in enumerate(params):
        expected = -sum(float(w) * noise.noise(s, i) for s, w in zip(seeds, weights)) / (6 * 0.1)
        torch.testing.assert_close(p.grad, expected)
