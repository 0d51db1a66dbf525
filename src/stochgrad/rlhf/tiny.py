"""A tiny GPT-2-style model for the offline demo and the tests: train a tokenizer, build from a config, pretrain.

Everything is local: a byte-level BPE tokenizer is trained on the corpus with the ``tokenizers`` package, the
model is ``GPT2LMHeadModel`` built from a ``GPT2Config`` (no weights are downloaded), and pretraining is plain
next-token prediction. :func:`build_pretrained` saves tokenizer and model to a directory that
:meth:`stochgrad.rlhf.policy.Policy.from_pretrained` (and any ``transformers`` user) loads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stochgrad.rlhf.policy import save_pretrained_atomic

EOS = "<|endoftext|>"
PAD = "<pad>"


def train_tokenizer(texts: Sequence[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast``.

    Encoding a text prepends the end-of-text token, which doubles as beginning of sequence (as in GPT-2), so a
    prompt is never empty. Padding is ``<pad>``; the padding side is left, as batched generation needs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, eos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD,
                                   padding_side="left")


def tiny_gpt2(tokenizer, n_layer: int = 2, n_head: int = 4, n_embd: int = 64, n_positions: int = 64,
              seed: int = 0):
    """A randomly initialised ``GPT2LMHeadModel`` sized for ``tokenizer`` (dropout off, tied embeddings)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def encode_corpus(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text as ``<eos> text <eos>``, right-padded: ids ``[N, L]`` and mask ``[N, L]`` (L ≤ max_length)."""
    eos = tokenizer.eos_token_id
    rows = [tokenizer(t)["input_ids"][: max_length - 1] + [eos] for t in texts]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


@dataclass
class PretrainResult:
    """What :func:`pretrain` did: steps, the first and last training losses (nats per token), seconds."""

    steps: int
    first_loss: float
    final_loss: float
    seconds: float


def pretrain(model, ids: torch.Tensor, mask: torch.Tensor, steps: int = 600, batch_size: int = 64,
             lr: float = 3e-3, seed: int = 0, progress: bool = False) -> PretrainResult:
    """Next-token pretraining with AdamW and cosine decay on ``ids`` ``[N, L]`` (padding masked by ``mask``)."""
    import time

    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="pretrain", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(0, ids.shape[0], (batch_size,), generator=gen)
        x, m = ids[idx], mask[idx]
        keep = int(m.sum(1).max())
        x, m = x[:, :keep], m[:, :keep]
        labels = x.masked_fill(m == 0, -100)
        loss = model(input_ids=x, attention_mask=m, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    tail = losses[-20:]
    return PretrainResult(steps, losses[0], sum(tail) / len(tail), time.perf_counter() - t0)


def build_pretrained(out: str | Path, n_sentences: int = 20000, steps: int = 600, vocab_size: int = 512,
                     seed: int = 0, progress: bool = False) -> tuple[Path, PretrainResult]:
    """Generate the demo corpus, train a tokenizer, pretrain a tiny GPT-2 on it and save both to ``out``.

    Also writes ``corpus.txt`` next to the weights, so what the model learned from can be read.
    """
    from stochgrad.rlhf.demo_data import generate_corpus

    texts = generate_corpus(n_sentences, seed=seed)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    model = tiny_gpt2(tokenizer, seed=seed)
    ids, mask = encode_corpus(tokenizer, texts, max_length=model.config.n_positions)
    result = pretrain(model, ids, mask, steps=steps, seed=seed, progress=progress)
    path = save_pretrained_atomic(model, tokenizer, out, {"corpus.txt": "\n".join(texts) + "\n"})
    return path, result
