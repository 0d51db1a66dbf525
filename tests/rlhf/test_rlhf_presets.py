"""Each preset against its paper's formula, written out by hand with loops, on one fixed batch.

The loss value and its gradient with respect to every token's log-probability must match; since the parameters
enter only through those log-probabilities, this pins the parameter gradient too.
"""

from __future__ import annotations

import math

import pytest
import torch

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.rlhf.estimators import PRESETS, PolicyGradient, estimator_config

LENGTHS = [3, 1, 2, 3]
LOGP = [[-1.2, -0.4, -2.0], [-0.7, 0.0, 0.0], [-0.3, -1.6, 0.0], [-0.9, -0.2, -1.1]]
REF = [[-1.0, -0.9, -1.5], [-1.1, 0.0, 0.0], [-0.2, -1.0, 0.0], [-1.3, -0.2, -0.6]]
REWARDS = [0.8, -0.3, 0.5, 0.1]


def batch():
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(3)] for n in LENGTHS])
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    return logp, mask.double(), torch.tensor(REWARDS, dtype=torch.float64), torch.tensor(REF, dtype=torch.float64)


def ours(config, logp, mask, rewards, ref):
    return PolicyGradient(config).loss(logp, mask, rewards, ref).loss


def std(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def check(config, hand_fn) -> None:
    logp, mask, rewards, ref = batch()
    mine = ours(config, logp, mask, rewards, ref)
    (g_mine,) = torch.autograd.grad(mine, logp)
    logp2 = logp.detach().clone().requires_grad_(True)
    hand = hand_fn(logp2)
    (g_hand,) = torch.autograd.grad(hand, logp2)
    assert float(mine.detach()) == pytest.approx(float(hand.detach()), abs=1e-12)
    assert torch.allclose(g_mine, g_hand, atol=1e-12)


def test_rloo_is_ahmadian_et_al_with_the_sequence_kl_in_the_reward() -> None:
    beta, k = 0.1, 2

    def hand(lp):
        # R_i = r_i − β Σ_t (log π − log π_ref);  A_i = R_i − mean_{j ≠ i} R_j;  loss = −1/B Σ_i A_i log π(y_i)
        ret = [REWARDS[i] - beta * sum(LOGP[i][t] - REF[i][t] for t in range(LENGTHS[i])) for i in range(4)]
        total = 0
        for i in range(4):
            g = i // k
            others = [ret[j] for j in range(g * k, g * k + k) if j != i]
            adv = ret[i] - sum(others) / len(others)
            total = total + adv * sum(lp[i, t] for t in range(LENGTHS[i]))
        return -total / 4

    check(estimator_config("rloo", k=k, beta=beta), hand)


def test_grpo_is_shao_et_al_with_k3_in_the_loss_and_a_per_sequence_token_mean() -> None:
    beta, k = 0.04, 2

    def hand(lp):
        # A_i = (r_i − mean_g r) / (std_g r + 1e-4);  loss = −1/G Σ_i 1/|o_i| Σ_t [A_i log π_it − β k3_it]
        total = 0
        for i in range(4):
            g = [REWARDS[j] for j in range(i // k * k, i // k * k + k)]
            adv = (REWARDS[i] - sum(g) / k) / (std(g) + 1e-4)
            per_tok = 0
            for t in range(LENGTHS[i]):
                ratio = torch.exp(REF[i][t] - lp[i, t])               # π_ref / π_θ
                k3 = ratio - torch.log(ratio) - 1
                per_tok = per_tok + adv * lp[i, t] - beta * k3
            total = total + per_tok / LENGTHS[i]
        return -total / 4

    check(estimator_config("grpo", k=k), hand)


def test_reinforce_uses_a_moving_average_of_earlier_batches_only() -> None:
    beta, decay = 0.05, 0.9
    config = estimator_config("reinforce")
    logp, mask, rewards, ref = batch()
    est = PolicyGradient(config)
    first = est.loss(logp, mask, rewards, ref).loss.detach()
    second = est.loss(logp, mask, rewards + 1.0, ref).loss.detach()

    ret = [REWARDS[i] - beta * sum(LOGP[i][t] - REF[i][t] for t in range(LENGTHS[i])) for i in range(4)]
    b1, b2 = 0.0, (1 - decay) * sum(ret) / 4
    seq_logp = [sum(LOGP[i][:LENGTHS[i]]) for i in range(4)]
    assert float(first) == pytest.approx(-sum((ret[i] - b1) * seq_logp[i] for i in range(4)) / 4, abs=1e-12)
    assert float(second) == pytest.approx(-sum((ret[i] + 1 - b2) * seq_logp[i] for i in range(4)) / 4, abs=1e-12)
    assert est.moving_average == pytest.approx(decay * b2 + (1 - decay) * (sum(ret) / 4 + 1), abs=1e-12)


def test_reinforce_plus_plus_is_hu_with_token_kl_reward_to_go_and_batch_whitening() -> None:
    beta = 0.05

    def hand(lp):
        # r_t = 1[t = T] r − β (log π_t − log π_ref,t);  G_t = Σ_{s ≥ t} r_s;  A = (G − mean) / (std + 1e-4)
        # over all tokens of the batch;  loss = −Σ A_t log π_t / (number of tokens)
        returns = {}
        for i in range(4):
            n = LENGTHS[i]
            r = [-beta * (LOGP[i][t] - REF[i][t]) + (REWARDS[i] if t == n - 1 else 0.0) for t in range(n)]
            for t in range(n):
                returns[(i, t)] = sum(r[t:])
        vals = list(returns.values())
        mean, sd = sum(vals) / len(vals), std(vals)
        total = sum((g - mean) / (sd + 1e-4) * lp[i, t] for (i, t), g in returns.items())
        return -total / len(vals)

    check(estimator_config("reinforce++"), hand)


def test_every_preset_is_documented_and_valid() -> None:
    assert set(PRESETS) == {"reinforce", "rloo", "grpo", "reinforce++"}
    for cfg in PRESETS.values():
        assert cfg.validate() is cfg


def test_k_1_with_leave_one_out_is_refused_with_the_argument_named() -> None:
    with pytest.raises(BudgetError, match=r"k: the leave-one-out baseline needs at least 2 completions per "
                                          r"prompt .*got k=1"):
        estimator_config("rloo", k=1)
    with pytest.raises(BudgetError, match="k: group-std scaling needs at least 2"):
        estimator_config("grpo", k=1, baseline="none")
    with pytest.raises(InvalidArgumentError, match=r"baseline: got 'median'; choose one of"):
        estimator_config("rloo", baseline="median")
    with pytest.raises(InvalidArgumentError, match=r"estimator: unknown name 'ppo'; choose one of"):
        estimator_config("ppo")
    with pytest.raises(InvalidArgumentError, match="beta: need a KL coefficient >= 0"):
        estimator_config("rloo", beta=-1.0)
