"""Rewards: VADER, a sequence-classification reward model built from a config, and checks on what comes back."""

from __future__ import annotations

import math

import pytest
import torch

from stochgrad.errors import EvaluationError, InvalidArgumentError
from stochgrad.rlhf.rewards import SequenceClassifierReward, VaderReward, evaluate_rewards, make_reward


def test_vader_scores_sentiment_of_the_full_text_or_the_completion() -> None:
    full, comp = VaderReward("full"), VaderReward("completion")
    r = evaluate_rewards(full, ["the movie was", "the movie was not"], [" great .", " great ."])
    assert r[0] > 0.5 and r[1] < -0.3
    assert evaluate_rewards(comp, ["the movie was not"], [" great ."])[0] > 0.5
    assert isinstance(make_reward("vader"), VaderReward)


def test_a_sequence_classification_model_is_a_reward(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, num_labels=2,
                     pad_token_id=tok.pad_token_id)
    GPT2ForSequenceClassification(cfg).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    rm = make_reward(str(tmp_path / "rm"))
    assert isinstance(rm, SequenceClassifierReward) and rm.label == 1
    prompts, completions = ["the movie was", "we"], [" great .", " hated the long film ."]
    values = evaluate_rewards(rm, prompts, completions)
    # Against a direct, unbatched computation of the chosen logit.
    for i in range(2):
        enc = tok(prompts[i] + completions[i], return_tensors="pt")
        assert float(values[i]) == pytest.approx(float(rm.model(**enc).logits[0, 1]), abs=1e-4)
    with pytest.raises(InvalidArgumentError, match="label: the reward model has 2 labels"):
        SequenceClassifierReward(str(tmp_path / "rm"), label=5)
    with pytest.raises(InvalidArgumentError, match="reward: '.*nope' is not a directory"):
        make_reward(str(tmp_path / "nope"))


@pytest.mark.parametrize("fn, message", [
    (lambda p, c: [0.5] * (len(c) - 1), r"reward: the reward function returned 2 value\(s\) .* for 3 completions"),
    (lambda p, c: [0.5, math.nan, 0.1], r"reward: the reward function returned nan for completion 1 .*'b'"),
    (lambda p, c: torch.tensor([0.0, 1.0, math.inf]), r"returned inf for completion 2"),
    (lambda p, c: ["good", "bad", "ok"], r"reward: the reward function must return numbers"),
])
def test_bad_rewards_are_reported_with_the_argument_named(fn, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        evaluate_rewards(fn, ["x", "y", "z"], ["a", "b", "c"])
