"""A toy autoregressive policy whose every sequence can be enumerated, so E[r] and KL have exact gradients.

Tokens {0: a, 1: b, 2: end}; a sequence stops at ``end`` or after 3 tokens. The policy is a table of logits
θ[prompt, previous token (or start), next token]; the reward a fixed random number per (prompt, sequence).
"""

from __future__ import annotations

import itertools

import torch

V, END, T, N_PROMPTS = 3, 2, 3, 2


def sequences() -> list[tuple[int, ...]]:
    out = [(END,)]
    out += [(a, END) for a in (0, 1)]
    out += [(a, b, c) for a, b in itertools.product((0, 1), repeat=2) for c in range(V)]
    return out


def reward_table(seed: int = 0, offset: float = 0.0) -> dict[tuple[int, tuple[int, ...]], float]:
    g = torch.Generator().manual_seed(seed)
    return {(x, y): offset + float(torch.randn((), generator=g) * 1.5 + 0.7 * y.count(0))
            for x in range(N_PROMPTS) for y in sequences()}


def seq_log_prob(theta: torch.Tensor, x: int, y: tuple[int, ...]) -> torch.Tensor:
    prev, total = 0, theta.new_zeros(())
    for tok in y:
        total = total + torch.log_softmax(theta[x, prev], -1)[tok]
        prev = tok + 1
    return total


def exact_objective(theta: torch.Tensor, rewards: dict, beta: float = 0.0, theta_ref: torch.Tensor | None = None):
    """mean over prompts of E_y r(x, y) − β KL(π_θ(·|x) ‖ π_ref(·|x)), differentiable in θ."""
    total = theta.new_zeros(())
    for x in range(N_PROMPTS):
        for y in sequences():
            lp = seq_log_prob(theta, x, y)
            term = rewards[(x, y)]
            if beta:
                term = term - beta * (lp - seq_log_prob(theta_ref, x, y))
            total = total + lp.exp() * term
    return total / N_PROMPTS


def sample(theta: torch.Tensor, k: int, gen: torch.Generator):
    """k sequences for each prompt (prompt-major): prompts [B], tokens [B, T], mask [B, T] (no grad)."""
    x = torch.arange(N_PROMPTS).repeat_interleave(k)
    b = x.shape[0]
    prev = torch.zeros(b, dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    toks, mask = [], []
    with torch.no_grad():
        for _ in range(T):
            p = torch.softmax(theta[x, prev], -1)
            tok = torch.multinomial(p, 1, generator=gen).squeeze(1)
            tok = torch.where(done, torch.full_like(tok, END), tok)
            toks.append(tok)
            mask.append(~done)
            done = done | (tok == END)
            prev = tok + 1
    return x, torch.stack(toks, 1), torch.stack(mask, 1).long()


def token_log_probs(theta: torch.Tensor, x: torch.Tensor, toks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    prev = torch.cat([torch.zeros_like(toks[:, :1]), toks[:, :-1] + 1], 1)
    lp = torch.log_softmax(theta[x.unsqueeze(1).expand_as(toks), prev], -1).gather(-1, toks.unsqueeze(-1))
    return lp.squeeze(-1) * mask


def rewards_of(x: torch.Tensor, toks: torch.Tensor, mask: torch.Tensor, table: dict) -> torch.Tensor:
    out = []
    for xi, row, m in zip(x.tolist(), toks.tolist(), mask.tolist()):
        out.append(table[(xi, tuple(t for t, keep in zip(row, m) if keep))])
    return torch.tensor(out)
