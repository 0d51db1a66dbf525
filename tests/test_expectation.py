"""``sg.expectation``: gradients flow into parameters and through the chain rule into networks."""

from __future__ import annotations

import torch

import stochgrad as sg


def test_backward_puts_the_estimate_into_the_parameters() -> None:
    loc = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    scale = torch.full((4,), 0.5, dtype=torch.float64)
    dist = sg.Normal(loc, scale)
    f = lambda x: ((x - 1) ** 2).sum(-1)  # noqa: E731
    loss, est = sg.expectation(f, dist, sg.MeasureValued(4), generator=torch.Generator().manual_seed(0),
                               return_estimate=True)
    loss.backward()
    assert torch.equal(loc.grad, est.grad["loc"])
    assert est.n_evals == 2 * 4 * 4  # only loc requires grad, so scale costs nothing


def test_chain_rule_into_a_log_scale_parameter() -> None:
    log_scale = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    dist = sg.Normal(torch.zeros(3, dtype=torch.float64), log_scale.exp())
    f = lambda x: (x ** 2).sum(-1)  # noqa: E731  E f = Σ σ²  ⇒  d/d log σ = 2σ² = 2
    loss, est = sg.expectation(f, dist, sg.Pathwise(64), generator=torch.Generator().manual_seed(0),
                               return_estimate=True)
    loss.backward()
    assert torch.allclose(log_scale.grad, est.grad["scale"] * log_scale.exp())


def test_training_a_network_that_outputs_the_loc_of_a_normal() -> None:
    """A small network maps contexts c to the mean of N(μ(c), 0.1²); a black-box reward f(x, c) = −|x − 2c|²
    is maximised by μ(c) = 2c. Trained only through MVD estimates of E f."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(0)
    contexts = torch.rand(32, 2, generator=gen) * 2 - 1
    target = 2 * contexts

    def reward(x):  # x: [B, 32, 2] -> [B, 32]
        return -((x - target) ** 2).sum(-1)

    def mse():
        with torch.no_grad():
            return float(((net(contexts) - target) ** 2).sum(-1).mean())

    before = mse()
    for _ in range(300):
        dist = sg.Normal(net(contexts), torch.full((32, 2), 0.1))
        loss = -sg.expectation(reward, dist, sg.MeasureValued(1), generator=gen).div(32)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mse()
    assert after < 0.02 * before, (before, after)


def test_expectation_batch_of_copies_sums_values() -> None:
    """Five copies: the forward value is the sum over copies of each copy's mean of f, and backward puts each
    copy's score-function estimate into its own row of loc.grad: checked against the same estimate computed by
    hand from the same draws, (1/N) Σ_n f(x_n) (x_n − μ)/σ²."""
    loc = torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(5, 3).requires_grad_(True)
    dist = sg.Normal(loc, 1.0)
    f = lambda x: (x ** 2).sum(-1) + x[..., 0]  # noqa: E731
    loss, est = sg.expectation(f, dist, sg.ScoreFunction(4), generator=torch.Generator().manual_seed(0),
                               return_estimate=True)
    assert loss.dim() == 0
    x = sg.ScoreFunction(4).plan(dist, torch.Generator().manual_seed(0)).points       # the same draws
    values = f(x)                                                                     # [4, 5]
    assert torch.allclose(loss, values.mean(0).sum())
    loss.backward()
    by_hand = (values[..., None] * (x - loc.detach())).mean(0)                          # σ = 1
    assert torch.allclose(loc.grad, by_hand) and torch.allclose(loc.grad, est.grad["loc"])
    assert not torch.allclose(loc.grad[0], loc.grad[1])                                # the copies differ
