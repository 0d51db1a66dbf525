"""Reward functions on (prompt, completion) texts: the protocol, VADER sentiment, and reward models.

A reward function is any callable ``fn(prompts, completions) -> values`` taking two equally long lists of texts
and returning one finite number per pair (a list, a NumPy array or a tensor). It is a black box: the estimators
never differentiate it. :func:`evaluate_rewards` calls it and checks what came back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from stochgrad.errors import EvaluationError, InvalidArgumentError


@runtime_checkable
class RewardFunction(Protocol):
    """``fn(prompts, completions)`` → one finite reward per pair (``len(prompts) == len(completions) == B``)."""

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Sequence[float] | Tensor: ...


def evaluate_rewards(fn: RewardFunction, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
    """Call ``fn`` and return its values as a float32 tensor ``[B]``.

    Raises:
      EvaluationError: naming ``reward`` when ``fn`` returns a different number of values than it was given
        pairs, or a NaN or infinite value (with the offending completion).
    """
    raw = fn(list(prompts), list(completions))
    try:
        values = torch.as_tensor(raw if isinstance(raw, Tensor) else list(raw), dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"reward: the reward function must return numbers; got {type(raw).__name__} "
                              f"({exc})") from None
    values = values.reshape(-1) if values.dim() == 2 and 1 in values.shape else values
    if values.dim() != 1 or values.shape[0] != len(completions):
        raise EvaluationError(
            f"reward: the reward function returned {values.numel()} value(s) in shape {tuple(values.shape)} for "
            f"{len(completions)} completions; it must return exactly one number per (prompt, completion) pair")
    bad = (~torch.isfinite(values)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise EvaluationError(
            f"reward: the reward function returned {float(values[i])} for completion {i} "
            f"(prompt {prompts[i]!r}, completion {completions[i]!r}); {bad.numel()} of {values.numel()} values "
            "are not finite, and rewards must be finite numbers")
    return values


class VaderReward:
    """VADER's compound sentiment score in [−1, 1] (Hutto & Gilbert 2014); the lexicon ships with the package.

    Args:
      on: score the ``"full"`` text (prompt + completion, the default: negations and contrasts that span the
        boundary count) or the ``"completion"`` alone.
    """

    def __init__(self, on: str = "full") -> None:
        if on not in ("full", "completion"):
            raise InvalidArgumentError(f"on: choose 'full' or 'completion'; got {on!r}")
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.on = on
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        texts = [p + c for p, c in zip(prompts, completions)] if self.on == "full" else list(completions)
        return [self._analyzer.polarity_scores(t)["compound"] for t in texts]

    def __repr__(self) -> str:
        return f"VaderReward(on={self.on!r})"


class SequenceClassifierReward:
    """A ``transformers`` sequence-classification model as a reward: the logit of one label for each text.

    Args:
      name_or_path: a local directory or hub id of an ``AutoModelForSequenceClassification``.
      label: which output logit is the reward (default: the only one for a one-logit reward model, else the
        last label, which is "positive" in the usual two-label sentiment models).
      on: ``"full"`` (prompt + completion) or ``"completion"``.
      batch_size: texts per forward pass.
      max_length: truncate texts to this many tokens.
      local_files_only: never contact the hub.
    """

    def __init__(self, name_or_path: str, label: int | None = None, on: str = "full", batch_size: int = 64,
                 max_length: int = 512, local_files_only: bool = False) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if on not in ("full", "completion"):
            raise InvalidArgumentError(f"on: choose 'full' or 'completion'; got {on!r}")
        text = str(name_or_path)
        path = Path(text).expanduser()
        if (text.startswith((".", "/", "~")) or path.exists()) and not path.is_dir():
            raise InvalidArgumentError(f"reward: {text!r} is not a directory holding a sequence-classification "
                                       "model")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(text, local_files_only=local_files_only)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                text, local_files_only=local_files_only).eval().requires_grad_(False)
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"reward: cannot load a sequence-classification model from {text!r}: "
                                       f"{str(exc).splitlines()[0]}") from None
        n = self.model.config.num_labels
        self.label = (0 if n == 1 else n - 1) if label is None else label
        if not 0 <= self.label < n:
            raise InvalidArgumentError(f"label: the reward model has {n} labels (0..{n - 1}); got {label}")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.on, self.batch_size, self.max_length = on, batch_size, max_length

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        texts = [p + c for p, c in zip(prompts, completions)] if self.on == "full" else list(completions)
        out = []
        device = next(self.model.parameters()).device
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(device)
            out.append(self.model(**enc).logits[:, self.label].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)


def make_reward(spec: str, label: int | None = None, local_files_only: bool = False) -> RewardFunction:
    """A reward from its command-line name: ``"vader"`` (full text), ``"vader-completion"``, or the directory
    (or hub id) of a sequence-classification model."""
    if spec == "vader":
        return VaderReward("full")
    if spec == "vader-completion":
        return VaderReward("completion")
    if not spec:
        raise InvalidArgumentError("reward: got an empty name; use 'vader' or the directory of a reward model")
    return SequenceClassifierReward(spec, label=label, local_files_only=local_files_only)

