"""The policy wrapper: log-probabilities against a direct computation, seeded sampling, top-k, loading errors."""

from __future__ import annotations

import pytest
import torch

from stochgrad.errors import InvalidArgumentError
from stochgrad.rlhf.policy import Policy, top_k_filter

PROMPTS = ["the movie was", "i think the food is very", "we"]   # different lengths: left padding is exercised


@pytest.fixture(scope="module")
def policy(tiny_model_dir) -> Policy:
    return Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=10)


def direct_log_prob(policy: Policy, prompt_ids: list[int], completion: list[int]) -> float:
    """log π(completion | prompt) from one unpadded forward pass, temperature and top-k applied by hand."""
    x = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = policy.model(input_ids=x).logits[0, len(prompt_ids) - 1:-1].double() / policy.temperature
    if policy.top_k:
        kth = logits.topk(policy.top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).sum())


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 20)])
def test_batched_log_probs_match_a_direct_computation(tiny_model_dir, temperature, top_k) -> None:
    policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=10, temperature=temperature, top_k=top_k)
    rollout = policy.sample(PROMPTS, k=3, generator=torch.Generator().manual_seed(0))
    assert len(rollout) == 9 and rollout.prompts[:3] == [PROMPTS[0]] * 3
    assert len(set(rollout.lengths.tolist())) > 1                      # right padding is exercised too
    logp = policy.token_log_probs(rollout).detach()
    assert logp.shape == rollout.completion_ids.shape
    assert bool((logp[rollout.completion_mask == 0] == 0).all())
    for i in range(len(rollout)):
        p = rollout.prompt_ids[i][rollout.prompt_mask[i] == 1].tolist()
        c = rollout.completion_ids[i][rollout.completion_mask[i] == 1].tolist()
        assert float(logp[i].sum()) == pytest.approx(direct_log_prob(policy, p, c), abs=2e-4)
    assert torch.isfinite(logp).all()


def test_completions_stop_at_the_end_token_and_decode_without_it(policy) -> None:
    rollout = policy.sample(PROMPTS, k=4, generator=torch.Generator().manual_seed(1))
    eos = policy.eos_ids[0]
    for ids, m, text, trunc in zip(rollout.completion_ids.tolist(), rollout.completion_mask.tolist(),
                                   rollout.completions, rollout.truncated.tolist()):
        n = sum(m)
        assert m == [1] * n + [0] * (len(m) - n)
        assert (ids[n - 1] == eos) != trunc
        assert eos not in ids[: n - 1]
        assert "<|endoftext|>" not in text


def test_sampling_is_reproducible_from_the_generator(policy) -> None:
    a = policy.sample(PROMPTS, k=2, generator=torch.Generator().manual_seed(5))
    b = policy.sample(PROMPTS, k=2, generator=torch.Generator().manual_seed(5))
    c = policy.sample(PROMPTS, k=2, generator=torch.Generator().manual_seed(6))
    assert a.completions == b.completions and torch.equal(a.completion_ids, b.completion_ids)
    assert a.completions != c.completions


def test_sampled_first_tokens_follow_the_log_probs(tiny_model_dir) -> None:
    """2000 one-token completions: the frequencies of the likely tokens agree with exp(log-prob)."""
    policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=1, top_k=8)
    rollout = policy.sample(["the movie was"], k=2000, generator=torch.Generator().manual_seed(0))
    probs = policy.token_log_probs(rollout)[:, 0].exp().detach()
    tokens = rollout.completion_ids[:, 0]
    assert len(set(tokens.tolist())) <= 8                       # top-k respected
    for tok in set(tokens.tolist()):
        p = float(probs[tokens == tok][0])
        freq = float((tokens == tok).float().mean())
        assert abs(freq - p) < 5 * (p * (1 - p) / 2000) ** 0.5 + 1e-3


def test_the_reference_is_a_frozen_copy(policy) -> None:
    ref = policy.reference()
    for p, q in zip(policy.parameters(), ref.parameters()):
        assert not q.requires_grad and torch.equal(p, q) and p.data_ptr() != q.data_ptr()


def test_top_k_filter_keeps_k_tokens() -> None:
    x = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.5]])
    assert torch.isfinite(top_k_filter(x, 2)).sum() == 2
    assert torch.equal(top_k_filter(x, 0), x)


def test_bad_policy_input_names_the_argument(tmp_path, policy) -> None:
    with pytest.raises(InvalidArgumentError, match=r"model: '.*does-not-exist' is not a directory"):
        Policy.from_pretrained(str(tmp_path / "does-not-exist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match=r"model: cannot load a causal LM from the directory"):
        Policy.from_pretrained(str(tmp_path / "empty"))
    with pytest.raises(InvalidArgumentError, match="prompts: got an empty set of prompts"):
        policy.sample([], k=2, generator=torch.Generator())
    with pytest.raises(InvalidArgumentError, match="k: need at least 1 completion"):
        policy.sample(["the"], k=0, generator=torch.Generator())
    with pytest.raises(InvalidArgumentError, match=r"max_new_tokens: the longest prompt has \d+ tokens"):
        policy.sample(["the movie was"], k=1, generator=torch.Generator(), max_new_tokens=500)
    with pytest.raises(InvalidArgumentError, match="temperature: need > 0"):
        Policy(policy.model, policy.tokenizer, temperature=0.0)
