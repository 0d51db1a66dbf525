"""ES in parameter space: peak memory of one ES step against inference, and completions per second of an ES
step against plain batched generation, on the demo's architecture and on a GPT-2-small-sized model.

Both models have random weights (speed and memory do not depend on them; with random weights nearly every
completion runs to ``--max-new-tokens``, so every method generates the same number of tokens): the demo's GPT-2
(2 layers, 4 heads, width 64) and GPT-2 small (12 layers, 12 heads, width 768, 1024 positions, vocabulary 50 257,
124 M parameters), both with the demo's tokenizer (trained on 4000 demo sentences; ids it does not know decode
to nothing) and one torch thread.

Memory: each measurement runs in a fresh process that builds the model, generates once (warm-up), resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``), runs the operation once and reads ``VmHWM``; the number
reported is that peak minus the RSS just before the operation. So it counts what the operation itself allocates,
torch's allocations included (``tracemalloc`` would not see them). "inference" is sampling the m prompts of one
member (batch m) with the model's own weights, or G·m rows (G = ``--batch``) as the reference of ``es-lowrank
batched`` with G members per batch.

Speed: in one process per model, alternating, ``--repeats`` times each (medians): plain generation of the same
N·m completions in one batch (m prompts × N), the same in N batches of m (one member's batch), and one ES step
(``es``: full-rank noise; ``es-lowrank``: rank 1 in activation space, members one at a time; ``es-lowrank
batched``: the same with all N members side by side in one batch), all with the same prompts and lengths.
The reward is a cheap stand-in (the completion's length), so the ratio measures the model and the noise, not
VADER.

Usage: python benchmarks/rlhf_es.py [--models demo,gpt2-small] [--populations 8,32,128] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = {"demo": {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 64, "vocab_size": None},
          "gpt2-small": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257}}
#: name -> (estimator, members per batch; 0 = all of them)
METHODS = {"es": ("es", 1), "es-lowrank": ("es-lowrank", 1), "es-lowrank batched": ("es-lowrank", 0)}


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class LengthReward:
    """A cheap stand-in reward: the completion's length in characters."""

    def __call__(self, prompts, completions):
        import torch

        return torch.tensor([float(len(c)) for c in completions], dtype=torch.float64)


def build(name: str, max_new_tokens: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from stochgrad.rlhf.demo_data import generate_corpus
    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.tiny import train_tokenizer

    torch.set_num_threads(1)
    tok = train_tokenizer(generate_corpus(4000, seed=0), vocab_size=512)
    spec = dict(MODELS[name])
    vocab = spec.pop("vocab_size") or len(tok)
    config = GPT2Config(vocab_size=vocab, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                        **spec)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    return Policy(model, tok, max_new_tokens=max_new_tokens)


def es_config(method: str, population: int, batch: int = 8):
    from stochgrad.rlhf.es import es_config as make

    name, g = METHODS[method]
    if name == "es":
        return make(name, population=population, sigma=1e-3)
    return make(name, population=population, sigma=1e-3, member_batch=g or min(population, batch))


def measure_memory(args) -> dict:
    """One measurement in this (fresh) process: peak RSS of the operation minus the RSS before it."""
    import torch

    from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
    from stochgrad.rlhf.es.step import es_step, make_noise

    policy = build(args.model, args.max_new_tokens)
    prompts = list(TRAIN_PROMPTS[:args.prompts])
    params = sum(p.numel() * p.element_size() for p in policy.parameters()) / 2 ** 20
    policy.sample(prompts, 1, torch.Generator().manual_seed(0))          # warm-up
    if args.op != "generate":
        cfg = es_config(args.op, args.population, args.batch)
        noise = make_noise(policy, cfg.rank)
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    if args.op == "generate":      # population p > 0: p·m rows, the batch of p members side by side
        policy.sample(prompts, max(1, args.population), torch.Generator().manual_seed(1))
    else:
        es_step(policy, None, LengthReward(), prompts, cfg, noise, torch.Generator().manual_seed(1))
    seconds = time.perf_counter() - t0
    return {"model": args.model, "op": args.op, "population": args.population, "params_mb": params,
            "before_mb": before, "peak_mb": _status("VmHWM"), "delta_mb": _status("VmHWM") - before,
            "seconds": seconds}


def measure_speed(model: str, population: int, prompts_n: int, max_new_tokens: int, repeats: int) -> dict:
    """Medians of the four timings, alternating, in this process."""
    import torch

    from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
    from stochgrad.rlhf.es.step import es_step, make_noise

    policy = build(model, max_new_tokens)
    prompts = list(TRAIN_PROMPTS[:prompts_n])
    configs = {m: es_config(m, population, batch=population) for m in METHODS}
    noises = {m: make_noise(policy, c.rank) for m, c in configs.items()}
    policy.sample(prompts, 1, torch.Generator().manual_seed(0))          # warm-up
    times: dict[str, list[float]] = {"one batch": [], "member batches": [], **{m: [] for m in METHODS}}
    tokens: dict[str, list[int]] = {k: [] for k in times}
    for r in range(repeats):
        t0 = time.perf_counter()
        out = policy.sample(prompts, population, torch.Generator().manual_seed(r))
        times["one batch"].append(time.perf_counter() - t0)
        tokens["one batch"].append(int(out.lengths.sum()))
        t0 = time.perf_counter()
        n = 0
        for j in range(population):
            n += int(policy.sample(prompts, 1, torch.Generator().manual_seed(1000 * r + j)).lengths.sum())
        times["member batches"].append(time.perf_counter() - t0)
        tokens["member batches"].append(n)
        for m in METHODS:
            t0 = time.perf_counter()
            step = es_step(policy, None, LengthReward(), prompts, configs[m], noises[m],
                           torch.Generator().manual_seed(r))
            times[m].append(time.perf_counter() - t0)
            tokens[m].append(int(step.lengths.sum()))
            for p in policy.parameters():
                p.grad = None
    completions = population * prompts_n
    return {"model": model, "population": population, "prompts": prompts_n, "max_new_tokens": max_new_tokens,
            "completions": completions, "repeats": repeats,
            "seconds": {k: statistics.median(v) for k, v in times.items()},
            "tokens": {k: statistics.median(v) for k, v in tokens.items()},
            "params": sum(p.numel() for p in policy.parameters())}


def _child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"child {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(memory: list[dict], speed: list[dict], args) -> str:
    from _report import command, machine

    lines = ["## ES in parameter space: memory and throughput of one step (`benchmarks/rlhf_es.py`)", "",
             f"Command: `{command()}`",
             (f"Machine: {machine()}; one torch thread; a 2-core virtual machine whose speed varies by 10-20 % between "
              "runs, so compare ratios within a table, not absolute times."), "",
             ("Random weights (speed and memory do not depend on them), the demo's tokenizer, σ = 1e-3; `es`: "
              "full-rank noise; `es-lowrank`: rank 1 applied in activation space (`--lowrank-apply activations`), "
              "members one at a time; `es-lowrank batched`: the same with `--member-batch G`. Reward: the "
              "completion's length (a cheap stand-in)."), "",
             (f"**Peak memory of one step** (m = {args.prompts} prompts per member, {args.max_new_tokens} new "
              "tokens; a fresh process per cell: peak RSS during the step, reset through `/proc/self/clear_refs` "
              "and read from `VmHWM`, minus the RSS just before it, in MB). The reference is inference on the "
              f"same rows: sampling m prompts (one member's batch), or {args.batch}·m rows for `es-lowrank batched` "
              f"(G = {args.batch}). In brackets: (step − reference) / params, the extra memory in parameter-sized "
              "buffers."), "",
             "| model (params) | method | reference | " + " | ".join(f"N = {n}" for n in args.populations) + " |",
             "|---|---|---:|" + "---:|" * len(args.populations)]
    for model in args.models:
        cells = {(r["op"], r["population"]): r for r in memory if r["model"] == model}
        if ("generate", 0) not in cells:
            continue
        params = cells[("generate", 0)]["params_mb"]
        for m in METHODS:
            ref = cells.get(("generate", args.batch if METHODS[m][1] == 0 else 0))
            row = [f"{model} ({params:.1f} MB)", m, "n/a" if ref is None else f"{ref['delta_mb']:.1f}"]
            for n in args.populations:
                c = cells.get((m, n))
                if c is None or ref is None:
                    row.append("not run")
                else:
                    row.append(f"{c['delta_mb']:.1f} ({(c['delta_mb'] - ref['delta_mb']) / params:+.2f}×)")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", (f"**Completions per second of one ES step against plain batched generation** (the same m "
                   f"prompts, N × m completions of {args.speed_tokens} new tokens; medians of {args.repeats} "
                   "alternating repeats in one process; `es-lowrank batched` puts all N members in one batch)."), "",
              "| model (params) | N × m | generation, one batch | generation, N batches of m | "
              + " | ".join(METHODS) + " | " + " | ".join(f"{m} / one batch" for m in METHODS) + " |",
              "|---|---|---:|---:|" + "---:|" * (2 * len(METHODS))]
    for s in speed:
        c = s["completions"]
        rate = {k: c / v for k, v in s["seconds"].items()}
        lines.append(f"| {s['model']} ({s['params'] / 1e6:.2f} M) | {s['population']} × {s['prompts']} | "
                     f"{rate['one batch']:.1f} | {rate['member batches']:.1f} | "
                     + " | ".join(f"{rate[m]:.1f}" for m in METHODS) + " | "
                     + " | ".join(f"{rate[m] / rate['one batch']:.2f}" for m in METHODS) + " |")
    lines += ["", "Tokens generated (medians; the same work in every column): " + "; ".join(
        f"{s['model']}: " + ", ".join(f"{k} {int(v)}" for k, v in s["tokens"].items()) for s in speed) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="demo,gpt2-small")
    parser.add_argument("--populations", default="8,32,128")
    parser.add_argument("--skip", default="gpt2-small:es:128",
                        help="model:method:population cells not measured (comma-separated)")
    parser.add_argument("--prompts", type=int, default=2, help="m, prompts per member")
    parser.add_argument("--batch", type=int, default=8, help="G, members per batch of es-lowrank batched (memory)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="new tokens in the memory measurement")
    parser.add_argument("--speed-tokens", type=int, default=16)
    parser.add_argument("--speed-population", type=int, default=8)
    parser.add_argument("--speed-prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--out", default="runs/bench-rlhf-es")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--op", help=argparse.SUPPRESS)
    parser.add_argument("--population", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--speed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.speed:
            res = measure_speed(args.model, args.speed_population, args.speed_prompts, args.speed_tokens,
                                args.repeats)
        else:
            res = measure_memory(args)
        print(json.dumps(res))
        return 0
    args.models = [m for m in args.models.split(",") if m]
    args.populations = [int(n) for n in args.populations.split(",") if n]
    skip = {s for s in args.skip.split(",") if s}
    memory, speed = [], []
    common = ["--prompts", str(args.prompts), "--max-new-tokens", str(args.max_new_tokens), "--batch", str(args.batch)]
    for model in args.models:
        cells = [("generate", 0), ("generate", args.batch)] + [(m, n) for m in METHODS for n in args.populations
                                     if f"{model}:{m}:{n}" not in skip]
        for op, n in cells:
            t0 = time.perf_counter()
            memory.append(_child(["--model", model, "--op", op, "--population", str(n), *common]))
            memory[-1]["op"] = op
            print(f"memory {model} {op} N={n}: {memory[-1]['delta_mb']:.1f} MB ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        t0 = time.perf_counter()
        speed.append(_child(["--speed", "--model", model, "--speed-population", str(args.speed_population),
                             "--speed-prompts", str(args.speed_prompts), "--speed-tokens", str(args.speed_tokens),
                             "--repeats", str(args.repeats)]))
        print(f"speed {model}: {speed[-1]['seconds']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"memory": memory, "speed": speed}, indent=1))
    body = report(memory, speed, args)
    print(body)
    if not args.no_write:
        from _report import update_section

        print(f"updated {update_section('rlhf-es', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
