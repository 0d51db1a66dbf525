"""ES in parameter space on the tiny GPT-2: weights untouched by evaluation (fp32 and bf16), members are the
perturbed model, determinism, and ``stochgrad rlhf train --estimator es`` with an exact resume."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stochgrad.cli import main
from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.rlhf.es import EsConfig, perturbed
from stochgrad.rlhf.es.step import es_step, make_noise, trainable
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import VaderReward
from stochgrad.rlhf.trainer import TrainConfig, run_train
from stochgrad.runs.files import load_checkpoint, read_jsonl

PROMPTS = ["the movie was", "i think the food is"]
VOLATILE = ("seconds", "cpu_seconds")


def one_step(policy: Policy, seed: int, beta: float = 0.05, rank: int = 0) -> None:
    cfg = EsConfig(population=4, sigma=0.01, rank=rank, beta=beta)
    es_step(policy, policy.reference() if beta > 0 else None, VaderReward(), PROMPTS, cfg,
            make_noise(policy, rank), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_evaluating_a_population_leaves_the_weights_bitwise_unchanged(tiny_model_dir, dtype) -> None:
    policy = Policy.from_pretrained(str(tiny_model_dir), dtype=dtype, max_new_tokens=5)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    one_step(policy, seed=0)
    after = policy.model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == dtype or not value.is_floating_point()
        assert torch.equal(after[key], value), key
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and g.dtype == dtype and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)
    # What this guards against: perturbing in place and subtracting again does not restore bf16 weights.
    if dtype == torch.bfloat16:
        w = next(policy.parameters()).detach()
        d = (0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))).to(dtype)
        assert not torch.equal((w + d) - d, w)


def test_a_member_is_the_model_with_its_weights_perturbed(tiny_model_dir) -> None:
    policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=6)
    noise = make_noise(policy, rank=0)
    names, params = trainable(policy)
    values = perturbed(params, noise, seed=11, scale=0.02)
    member = policy.with_parameters(dict(zip(names, values)))
    moved = copy.deepcopy(policy.model)
    with torch.no_grad():
        for p, v in zip([p for p in moved.parameters() if p.requires_grad], values):
            p.copy_(v)
    in_place = Policy(moved, policy.tokenizer, max_new_tokens=6)
    a = member.sample(PROMPTS, 3, torch.Generator().manual_seed(4))
    b = in_place.sample(PROMPTS, 3, torch.Generator().manual_seed(4))
    assert a.completions == b.completions
    logp = member.token_log_probs(a)
    assert torch.allclose(logp, in_place.token_log_probs(b), atol=1e-5)
    assert not torch.allclose(logp, policy.token_log_probs(a), atol=1e-3)     # the member is perturbed


def test_the_same_seed_gives_the_same_update(tiny_model_dir) -> None:
    def grads(seed: int, rank: int = 0) -> list[torch.Tensor]:
        policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=5)
        one_step(policy, seed, rank=rank)
        return [p.grad for p in policy.parameters()]

    first, again, other = grads(0), grads(0), grads(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    low, low_again = grads(0, rank=2), grads(0, rank=2)
    assert all(torch.equal(a, b) for a, b in zip(low, low_again))


def test_both_members_of_a_pair_share_prompts_and_sampling_random_numbers(tiny_model_dir) -> None:
    # With a vanishing σ the two members of a pair are the same model to within 1e-7 of a weight, so common
    # random numbers make them sample the same texts; independent sampling would not (pairs would differ).
    policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=8)
    cfg = EsConfig(population=8, sigma=1e-7, shaping="none")
    prompts = PROMPTS * 2
    out = es_step(policy, None, VaderReward(), prompts, cfg, make_noise(policy, 0), torch.Generator().manual_seed(0))
    assert out.rewards.shape == (8, 4)
    assert torch.equal(out.rewards[0::2], out.rewards[1::2])
    assert torch.equal(out.lengths[0::2], out.lengths[1::2])
    assert not torch.equal(out.lengths[0], out.lengths[2])       # different pairs sample differently
    assert out.first.prompts == prompts


def small(model, **kw) -> TrainConfig:
    base = {"model": str(model), "estimator": "es", "population": 4, "sigma": 0.01, "completions_per_step": 8,
            "steps": 4, "lr": 1e-3, "max_new_tokens": 6, "checkpoint_every": 2, "sample_every": 2, "seed": 3,
            "beta": 0.05}
    base.update(kw)
    return TrainConfig(**base)


def strip(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.mark.parametrize("estimator", ["es", "es-lowrank"])
def test_es_training_resumes_exactly_after_an_interruption(tmp_path, tiny_model_dir, estimator) -> None:
    straight = run_train(small(tiny_model_dir, estimator=estimator), tmp_path / "straight", progress=False)

    def interrupt(experiment, record):
        if record["step"] == 3:          # after the step-2 checkpoint
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_train(small(tiny_model_dir, estimator=estimator), out, progress=False, callback=interrupt)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    resumed = run_train(small(tiny_model_dir, estimator=estimator), out, resume=True, progress=False)
    assert strip(resumed.records) == strip(straight.records)
    assert strip(read_jsonl(out / "metrics.jsonl")) == strip(straight.records)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["experiment"]
    b = load_checkpoint(out / "checkpoint.pt")["experiment"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["generator"], b["generator"])
    assert read_jsonl(out / "samples.jsonl") == read_jsonl(tmp_path / "straight" / "samples.jsonl")
    start = Policy.from_pretrained(str(tiny_model_dir)).model.state_dict()
    assert any(not torch.equal(start[k], a["model"][k]) for k in a["model"])      # the weights moved


def test_the_train_command_with_es(tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "cli"
    args = ["rlhf", "train", "--model", str(tiny_model_dir), "--estimator", "es", "--population", "4",
            "--sigma", "0.01", "--es-shaping", "z-score", "--device", "cpu", "--completions-per-step", "8",
            "--steps", "2", "--max-new-tokens", "6", "--lr", "1e-3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "reward (step mean)" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["estimator"], saved["population"], saved["sigma"], saved["es_shaping"], saved["device"]) == (
        "es", 4, 0.01, "z-score", "cpu")
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["samples_seen"] == 16
    assert {"reward_mean", "kl", "loss", "grad_norm", "fitness_std"} <= set(rows[-1])
    for name in ("reward", "kl"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "population=4" in (out / "summary.md").read_text()
    assert main(["rlhf", "train", "--out", str(out), "--steps", "3", "--resume", "--no-progress"]) == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]


def test_bad_es_input_is_refused_before_anything_is_written(tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "never"
    with pytest.raises(BudgetError, match="population: need an even number >= 2.*got 1"):
        run_train(small(tiny_model_dir, population=1), out, progress=False)
    with pytest.raises(BudgetError, match="population: .*got 3"):
        run_train(small(tiny_model_dir, population=3), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="sigma: need a finite perturbation scale > 0; got 0.0"):
        run_train(small(tiny_model_dir, sigma=0.0), out, progress=False)
    with pytest.raises(InvalidArgumentError, match=r"rank: 1000 exceeds min\(m, n\) = \d+ of the weight matrix"):
        run_train(small(tiny_model_dir, estimator="es-lowrank", rank=1000), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="rank: --estimator es uses full-rank noise"):
        run_train(small(tiny_model_dir, rank=2), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="k: an option of the action-space estimators"):
        run_train(small(tiny_model_dir, k=4), out, progress=False)
    with pytest.raises(BudgetError, match="completions_per_step: 10 is not a multiple of population=4"):
        run_train(small(tiny_model_dir, completions_per_step=10), out, progress=False)
    with pytest.raises(InvalidArgumentError, match="device: cannot use 'nonsense'"):
        run_train(small(tiny_model_dir, device="nonsense"), out, progress=False)
    assert not out.exists()
    assert main(["rlhf", "train", "--model", str(tiny_model_dir), "--estimator", "es", "--population", "1",
                 "--out", str(out)]) == 2
    assert "population: need an even number >= 2" in capsys.readouterr().err
    assert not out.exists()


def test_the_variance_command_measures_es_next_to_rloo(tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "var"
    args = ["rlhf", "variance", "--model", str(tiny_model_dir), "--estimators", "rloo,es,es-lowrank",
            "--population", "4", "--sigma", "0.01", "--completions", "8", "--repeats", "3", "--max-new-tokens", "6",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "variance.json").read_text())
    assert [s["name"] for s in stats] == ["rloo", "es", "es-lowrank"]
    assert all(s["completions"] == 8 and s["repeats"] == 3 for s in stats)
    assert all(s["trace_variance"] > 0 for s in stats)
    assert "es-lowrank" in printed
    with pytest.raises(BudgetError, match="completions: 10 sampled completions per estimate is not a multiple of "
                                          "population=4"):
        from stochgrad.rlhf.variance import VarianceConfig, run_variance
        run_variance(VarianceConfig(model=str(tiny_model_dir), estimators=["es"], population=4, completions=10),
                     tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


# A fresh process (so the kernel's peak-RSS counter sees only this step) builds a random GPT-2 whose 16 384 × 512
# embedding (8.4 M entries) spans several noise chunks, and reads the peak RSS of one full-rank ES step of 8 members.
_MEMORY_CHILD = textwrap.dedent('''
    import json, sys, torch
    from pathlib import Path
    from transformers import GPT2Config, GPT2LMHeadModel
    from stochgrad.rlhf.demo_data import generate_corpus
    from stochgrad.rlhf.es import EsConfig
    from stochgrad.rlhf.es.step import es_step, make_noise
    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.tiny import train_tokenizer

    def status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    torch.set_num_threads(1)
    tok = train_tokenizer(generate_corpus(500, seed=0), vocab_size=300)
    cfg = GPT2Config(vocab_size=int(sys.argv[1]), n_layer=2, n_head=4, n_embd=int(sys.argv[2]), n_positions=32,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    policy = Policy(GPT2LMHeadModel(cfg), tok, max_new_tokens=4)
    prompts = ["the movie was", "i think"]
    policy.sample(prompts, 1, torch.Generator().manual_seed(0))
    noise = make_noise(policy, 0)
    reward = lambda p, c: torch.tensor([float(len(x)) for x in c], dtype=torch.float64)
    before = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    es_step(policy, None, reward, prompts, EsConfig(population=8, sigma=1e-3), noise, torch.Generator().manual_seed(1))
    params = sum(p.numel() * p.element_size() for p in policy.parameters())
    print(json.dumps({"extra": status("VmHWM") - before, "params": params}))
''')


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux's /proc")
def test_a_full_rank_es_step_needs_one_parameter_sized_buffer_beside_inference() -> None:
    # The members' weights (θ + σε, one member at a time) and then the .grad buffers are the one parameter-sized
    # buffer; noise is drawn into them chunk by chunk. Forming θ + σ·ε from a whole-tensor noise tensor (and its
    # scaled copy) measured 1.23× the parameters here; chunked in-place noise measured 1.03×.
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, "16384", "512"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["extra"] <= 1.12 * result["params"], result
