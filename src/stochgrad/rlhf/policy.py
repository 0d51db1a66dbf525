"""A policy around any Hugging Face causal language model: load, copy as a frozen reference, sample, score.

The policy's distribution over a completion y = (y_1, …, y_T) of prompt x is the *sampling* distribution:

    π_θ(y | x) = Π_t softmax(topk(logits_θ(x, y_<t)) / τ)[y_t]

with temperature τ and top-k truncation (k = 0: no truncation). Sampling stops at an end-of-sequence token
(which belongs to the completion) or after ``max_new_tokens``. :meth:`Policy.token_log_probs` returns
log π_θ(y_t | x, y_<t) of exactly this distribution, so the score-function estimators built on it are
unbiased for the distribution that produced the samples. The model runs in eval mode (dropout off) for both
sampling and scoring, for the same reason.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError
from stochgrad.runs.files import atomic_write_dir


@dataclass
class Rollout:
    """``k`` sampled completions for each of P prompts: B = P·k rows, a prompt's k completions consecutive.

    Attributes:
      prompts: the prompt of each row, ``len B``.
      completions: decoded completions without the end-of-sequence token, ``len B``.
      prompt_ids: ``[B, Lp]`` prompt tokens, left-padded.
      prompt_mask: ``[B, Lp]`` 1 on prompt tokens, 0 on padding.
      completion_ids: ``[B, T]`` sampled tokens, right-padded with the pad token.
      completion_mask: ``[B, T]`` 1 on sampled tokens (the end-of-sequence token included), 0 after.
      truncated: ``[B]`` True where no end-of-sequence token was sampled within ``max_new_tokens``.
      group_size: k.
    """

    prompts: list[str]
    completions: list[str]
    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    truncated: Tensor
    group_size: int

    @property
    def lengths(self) -> Tensor:
        """Tokens in each completion, ``[B]``."""
        return self.completion_mask.sum(1)

    @property
    def n_prompts(self) -> int:
        return len(self.prompts) // self.group_size

    def __len__(self) -> int:
        return len(self.prompts)


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    """Set every logit below the k-th largest of its row to −inf (``top_k`` = 0 or ≥ vocabulary: unchanged)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _positions(mask: Tensor) -> Tensor:
    """Position ids that skip left padding: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


class Policy:
    """A causal LM with a tokenizer and a sampling distribution (temperature, top-k, maximum length).

    Args:
      model: a ``transformers`` causal LM (``AutoModelForCausalLM``), or any module with the same call
        signature (``input_ids``, ``attention_mask``, ``position_ids``, a cache) returning ``.logits``.
      tokenizer: its tokenizer; a missing pad token is set to the end-of-sequence token.
      temperature: τ > 0.
      top_k: keep the k most likely tokens at each step (0: all).
      max_new_tokens: the longest completion.

    Example::

        policy = Policy.from_pretrained("runs/rlhf-demo/base-model", max_new_tokens=16)
        ref = policy.reference()
        rollout = policy.sample(["the movie was"], k=4, generator=torch.Generator().manual_seed(0))
        logp = policy.token_log_probs(rollout)          # [4, T], differentiable
    """

    def __init__(self, model, tokenizer, temperature: float = 1.0, top_k: int = 0,
                 max_new_tokens: int = 32) -> None:
        if not (temperature > 0):
            raise InvalidArgumentError(f"temperature: need > 0; got {temperature!r}")
        if not isinstance(top_k, int) or top_k < 0:
            raise InvalidArgumentError(f"top_k: need an integer >= 0 (0 = no truncation); got {top_k!r}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidArgumentError(f"max_new_tokens: need an integer >= 1; got {max_new_tokens!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids: list[int] = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, local_files_only: bool = False, dtype: torch.dtype | None = None,
                        **sampling) -> Policy:
        """Load model and tokenizer from a local directory or a hub id (from the user's cache or the hub).

        Raises:
          InvalidArgumentError: naming ``model`` when ``name_or_path`` looks like a path that does not exist,
            or when nothing loadable is found under that name.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        text = str(name_or_path)
        path = Path(text).expanduser()
        looks_local = path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
        if looks_local and not path.is_dir():
            raise InvalidArgumentError(
                f"model: {text!r} is not a directory (it should hold a transformers causal LM: config.json and "
                f"weights, as written by save_pretrained or by `stochgrad rlhf pretrain`)")
        source = str(path) if looks_local else text
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
            kwargs = {"dtype": dtype} if dtype is not None else {}
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_files_only, **kwargs)
        except (OSError, ValueError) as exc:
            where = "directory" if looks_local else "hub id"
            raise InvalidArgumentError(f"model: cannot load a causal LM from the {where} {text!r}: "
                                       f"{str(exc).splitlines()[0]}") from None
        return cls(model, tokenizer, **sampling)

    def reference(self) -> Policy:
        """A frozen copy (no gradients, own weights) with the same tokenizer and sampling settings: π_ref."""
        model = copy.deepcopy(self.model).requires_grad_(False).eval()
        return Policy(model, self.tokenizer, self.temperature, self.top_k, self.max_new_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters(self):
        return self.model.parameters()

    def with_parameters(self, values: dict[str, Tensor]) -> Policy:
        """The same policy run with some parameters replaced, without touching the model's own weights.

        Every forward pass goes through ``torch.func.functional_call(model, values, ...)``, so sampling,
        scoring and the KV cache see θ' while ``self.model``'s tensors stay bitwise unchanged. Tied weights
        stay tied (GPT-2's output layer follows ``transformer.wte.weight``); parameters not named in
        ``values`` keep their own value.

        Args:
          values: parameter name (as in ``model.named_parameters()``) → tensor of the same shape.
        """
        view = copy.copy(self)
        view.model = _Reparametrized(self.model, values)
        return view

    # ------------------------------------------------------------------ tokens
    def encode(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> tuple[Tensor, Tensor]:
        """Prompts as left-padded token ids ``[P, Lp]`` and mask ``[P, Lp]``; checks that the longest prompt plus
        ``max_new_tokens`` (default: the policy's) fits the model's positions.

        Raises:
          InvalidArgumentError: naming ``prompts`` for an empty list or a prompt with no tokens.
        """
        if len(prompts) == 0:
            raise InvalidArgumentError("prompts: got an empty set of prompts; need at least one")
        rows = self.tokenizer(list(prompts))["input_ids"]
        for i, r in enumerate(rows):
            if len(r) == 0:
                raise InvalidArgumentError(
                    f"prompts: prompt {i} ({prompts[i]!r}) has no tokens; this tokenizer adds no beginning-of-"
                    "sequence token, so every prompt needs some text")
        longest = max(len(r) for r in rows)
        new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None)
        if limit is not None and longest + new > limit:
            raise InvalidArgumentError(
                f"max_new_tokens: the longest prompt has {longest} tokens, and {longest} + {new} "
                f"exceeds the model's {limit} positions")
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, longest - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, longest - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def decode(self, completion_ids: Tensor, completion_mask: Tensor) -> list[str]:
        """Completion texts, end-of-sequence and padding tokens removed."""
        out = []
        for ids, m in zip(completion_ids.tolist(), completion_mask.tolist()):
            toks = [t for t, keep in zip(ids, m) if keep and t not in self.eos_ids]
            out.append(self.tokenizer.decode(toks, skip_special_tokens=True))
        return out

    def _logits_filter(self, logits: Tensor) -> Tensor:
        return top_k_filter(logits.float() / self.temperature, self.top_k)

    def _forward(self, ids: Tensor, mask: Tensor, positions: Tensor, cache=None, keep: int = 0):
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        if cache is not None:
            kwargs[self._cache_kw] = cache
            kwargs["use_cache"] = True
        if keep and self._logits_to_keep:
            kwargs["logits_to_keep"] = keep
        return self.model(**kwargs)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, prompts: Sequence[str], k: int, generator: torch.Generator | Sequence[torch.Generator],
               max_new_tokens: int | None = None) -> Rollout:
        """Draw ``k`` completions of every prompt from π_θ, all randomness from ``generator``.

        Args:
          prompts: P prompt texts.
          k: completions per prompt.
          generator: a CPU ``torch.Generator``; the same state gives the same completions. Or a list of G
            generators: the B rows are cut into G equal consecutive groups and group g draws its tokens from
            generator g, exactly as ``sample`` of that group's rows alone with that generator would.
          max_new_tokens: overrides the policy's setting for this call.
        Returns:
          A :class:`Rollout` with B = P·k rows.
        """
        if not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"k: need at least 1 completion per prompt; got {k!r}")
        steps = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        ids, mask = self.encode(prompts, steps)
        ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        b = ids.shape[0]
        gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
        if not gens or b % len(gens):
            raise InvalidArgumentError(f"generator: {len(gens)} generators cannot share {b} rows in equal groups")
        size = b // len(gens)
        positions = _positions(mask)
        cache = self._new_cache()
        out = self._forward(ids, mask, positions, cache=cache, keep=1)
        cache = self._cache_of(out, cache)
        logits = out.logits[:, -1]
        next_pos = positions[:, -1:] + 1
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=ids.device)
        done = torch.zeros(b, dtype=torch.bool, device=ids.device)
        tokens, alive = [], []
        attn = mask
        for t in range(steps):
            probs = torch.softmax(self._logits_filter(logits), -1)
            probs = probs.cpu()
            if len(gens) == 1:
                tok = torch.multinomial(probs, 1, generator=gens[0]).squeeze(1).to(ids.device)
            else:    # a group whose rows are all done draws nothing more, as it would alone
                tok = torch.cat([torch.multinomial(probs[g * size:(g + 1) * size], 1, generator=gen).squeeze(1)
                                 if not bool(done[g * size:(g + 1) * size].all()) else
                                 torch.full((size,), self.pad_id, dtype=torch.long)
                                 for g, gen in enumerate(gens)]).to(ids.device)
            tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
            tokens.append(tok)
            alive.append(~done)
            done = done | torch.isin(tok, eos)
            if bool(done.all()) or t == steps - 1:
                break
            attn = torch.cat([attn, alive[-1].long().unsqueeze(1)], 1)
            out = self._forward(tok.unsqueeze(1), attn, next_pos, cache=cache)
            cache = self._cache_of(out, cache)
            logits = out.logits[:, -1]
            next_pos = next_pos + 1
        completion_ids = torch.stack(tokens, 1)
        completion_mask = torch.stack(alive, 1).long()
        prompts_b = [p for p in prompts for _ in range(k)]
        return Rollout(prompts_b, self.decode(completion_ids, completion_mask), ids, mask, completion_ids,
                       completion_mask, ~done, k)

    def _new_cache(self):
        try:
            from transformers import DynamicCache
        except ImportError:   # pragma: no cover - very old transformers
            return None
        try:
            return DynamicCache(config=self.model.config)
        except TypeError:     # pragma: no cover - transformers < 4.56
            return DynamicCache()

    def _cache_of(self, out, cache):
        new = getattr(out, "cache", None)
        if new is None:
            new = getattr(out, "past_key_values", None)
        return new if new is not None else cache

    # ------------------------------------------------------------------ scoring
    def token_log_probs(self, rollout: Rollout) -> Tensor:
        """log π_θ(y_t | x, y_<t) of every completion token, ``[B, T]``, 0 on padding; differentiable.

        One forward pass over ``[prompt | completion]`` with padding masked and position ids that skip the
        left padding, so each row's numbers equal those of the row scored alone.
        """
        t = rollout.completion_ids.shape[1]
        ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], 1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1)
        out = self._forward(ids, mask, _positions(mask), keep=t + 1)
        logits = out.logits[:, -(t + 1):-1]
        logp = torch.log_softmax(self._logits_filter(logits), -1)
        token = logp.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
        return token.masked_fill(rollout.completion_mask == 0, 0.0)



class _Reparametrized:
    """What :class:`Policy` needs of a model (call, ``config``, ``parameters()``, ``eval()``), with the call
    running ``model`` on other parameter values through ``torch.func.functional_call``."""

    def __init__(self, model, values: dict[str, Tensor]) -> None:
        self.module, self.values = model, values
        self.config = model.config
        self.generation_config = getattr(model, "generation_config", None)

    def __call__(self, **kwargs):
        return torch.func.functional_call(self.module, self.values, args=(), kwargs=kwargs, strict=False)

    def parameters(self):
        return self.module.parameters()

    def eval(self) -> _Reparametrized:
        return self


def save_pretrained_atomic(model, tokenizer, path: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """``save_pretrained`` of model and tokenizer (and ``extra_files``: name → text) into ``path`` atomically
    (:func:`stochgrad.runs.files.atomic_write_dir`): the old complete directory or the new one, never half."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)

    return atomic_write_dir(path, write)
