"""RLHF estimators on the offline demo task: REINFORCE-family (reinforce, rloo, grpo), evolution strategies in
parameter space (es, es-lowrank: population 8 × 4 prompts = the same 32 completions per update) and TRL's
RLOOTrainer (left out with a note when ``trl``/``datasets`` are not installed).

Same tiny GPT-2 (pretrained by the demo recipe), tokenizer, training prompts, VADER reward, learning rate, Adam
(TRL: AdamW with weight decay 0, constant schedule), gradient clipping at 1, β, sampling (temperature 1, no
top-k, 16 new tokens), 32 sampled completions per update and the same number of updates for every method. Each
(method, seed) runs in its own subprocess with one torch thread, which reports:

- wall and CPU seconds per update step (medians over steps; sampling + reward + update; TRL: between its step
  callbacks). CPU seconds of a one-thread process are far less disturbed by other jobs on the machine;
- peak resident memory (``VmHWM``) and its growth during training (peak − RSS once libraries, model, reference
  and reward are loaded),
- the reward after training on held-out prompts (16 prompts × 8 completions, the same seed for every method)
  and KL(π ‖ π_pretrained) per completion, both computed by the same code for every method.

Gradient variance is measured at the pretrained policy for our estimators, ES included (one population per
estimate), at equal completions per estimate.

Usage: python benchmarks/rlhf.py [--seeds 0,1,2] [--steps 60] [--repeats 64] [--out runs/bench-rlhf]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

# method name -> (preset, k) for ours; "trl-rloo" is TRL's RLOOTrainer with k = 4.
OURS = {"reinforce": ("reinforce", 1), "rloo k=2": ("rloo", 2), "rloo k=4": ("rloo", 4), "grpo": ("grpo", 4)}
# Evolution strategies in parameter space: method name -> extra TrainConfig settings. Population 8 × 4 prompts
# = 32 completions per update (the trainer counts every member's completions); σ, rank (es-lowrank: 1) and the
# shaping (centred ranks) are the trainer's defaults. es-lowrank samples its 8 members side by side in one batch
# (--member-batch 8: the same results to float rounding as one at a time, only faster).
ES = {"es": {}, "es-lowrank": {"member_batch": 8}}
POPULATION, SIGMA, ES_SHAPING = 8, 1e-3, "centred-ranks"
TRL_K = 4
COMPLETIONS_PER_STEP = 32
MAX_NEW_TOKENS = 16
LR = 5e-4
BETA_RLOO = 0.05
EVAL_K, EVAL_SEED = 8, 777


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    """VmHWM, the peak RSS of this process's address space. (ru_maxrss would not do: Linux keeps it across
    execve, so a worker would report its parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _evaluate(model, tokenizer, base: str) -> dict:
    from stochgrad.rlhf.demo_data import EVAL_PROMPTS
    from stochgrad.rlhf.evaluate import evaluate
    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.rewards import VaderReward

    policy = Policy(model, tokenizer, max_new_tokens=MAX_NEW_TOKENS)
    ref = Policy.from_pretrained(base, max_new_tokens=MAX_NEW_TOKENS).reference()
    ev = evaluate(policy, VaderReward(), EVAL_PROMPTS, k=EVAL_K, seed=EVAL_SEED, reference=ref)
    return {"reward": ev.reward, "reward_se": ev.reward_se, "kl": ev.kl, "length": ev.length}


def worker_ours(method: str, seed: int, base: str, steps: int, out: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from stochgrad.rlhf.trainer import TrainConfig, run_train

    if method in ES:
        cfg = TrainConfig(model=base, estimator=method, population=POPULATION, sigma=SIGMA, es_shaping=ES_SHAPING,
                          beta=BETA_RLOO, completions_per_step=COMPLETIONS_PER_STEP, steps=steps, lr=LR,
                          max_new_tokens=MAX_NEW_TOKENS, seed=seed, checkpoint_every=steps, sample_every=steps,
                          threads=1, **ES[method])
    else:
        preset, k = OURS[method]
        cfg = TrainConfig(model=base, estimator=preset, k=k, completions_per_step=COMPLETIONS_PER_STEP, steps=steps,
                          lr=LR, max_new_tokens=MAX_NEW_TOKENS, seed=seed, checkpoint_every=steps,
                          sample_every=steps, threads=1)
    # Reach the state TRL's worker is in when its baseline RSS is taken (libraries imported, model, reference and
    # reward loaded); run_train then loads its own copy of the 0.5 MB model.
    import matplotlib.pyplot  # noqa: F401

    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.rewards import VaderReward
    warm = Policy.from_pretrained(base, max_new_tokens=MAX_NEW_TOKENS)
    warm_ref, _ = warm.reference(), VaderReward()
    rss_ready = _rss_mb()
    del warm, warm_ref
    res = run_train(cfg, out, progress=False)
    return {"seconds_per_step": statistics.median(r["seconds"] for r in res.records),
            "cpu_seconds_per_step": statistics.median(r["cpu_seconds"] for r in res.records),
            "rss_ready_mb": rss_ready,
            "curve": [r["reward_mean"] for r in res.records], "completions": res.records[-1]["samples_seen"],
            **_evaluate(res.policy.model, res.policy.tokenizer, base)}


def worker_trl(seed: int, base: str, steps: int, out: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
    from stochgrad.rlhf.rewards import VaderReward

    vader = VaderReward()

    def vader_reward(prompts, completions, **kwargs):
        return vader(prompts, completions)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t0 = self.c0 = None
            self.seconds, self.cpu = [], []

        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.seconds.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = RLOOConfig(
        output_dir=out, per_device_train_batch_size=COMPLETIONS_PER_STEP, gradient_accumulation_steps=1,
        num_generations=TRL_K, max_completion_length=MAX_NEW_TOKENS, temperature=1.0, top_k=0, top_p=1.0,
        beta=BETA_RLOO, num_iterations=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, max_steps=steps, bf16=False, fp16=False, gradient_checkpointing=False,
        use_cpu=True, logging_steps=1, save_strategy="no", report_to="none", seed=seed, disable_dropout=True,
        dataloader_num_workers=0, normalize_advantages=False)
    timer = StepTimer()
    trainer = RLOOTrainer(model=model, reward_funcs=vader_reward, args=config,
                          train_dataset=Dataset.from_dict({"prompt": list(TRAIN_PROMPTS)}),
                          processing_class=tokenizer, callbacks=[timer])
    rss_ready = _rss_mb()
    trainer.train()
    curve = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    trained = trainer.model
    trained.eval()
    return {"seconds_per_step": statistics.median(timer.seconds), "cpu_seconds_per_step": statistics.median(timer.cpu),
            "rss_ready_mb": rss_ready, "curve": curve,
            "completions": steps * COMPLETIONS_PER_STEP, **_evaluate(trained, tokenizer, base)}


def run_worker(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    if args.worker == "trl-rloo":
        result = worker_trl(args.seed, args.base, args.steps, args.run_dir)
    else:
        result = worker_ours(args.worker, args.seed, args.base, args.steps, args.run_dir)
    result.update(method=args.worker, seed=args.seed, peak_rss_mb=_peak_mb(), wall_seconds=time.perf_counter() - t0)
    Path(args.result).write_text(json.dumps(result))


def variance(base: str, repeats: int, methods: list[str]) -> dict:
    from stochgrad.runs.threads import torch_threads
    from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
    from stochgrad.rlhf.diagnostics import measure
    from stochgrad.rlhf.es.diagnostics import measure_es
    from stochgrad.rlhf.es.update import es_config
    from stochgrad.rlhf.estimators import estimator_config
    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.rewards import VaderReward

    out = {}
    with torch_threads(1):
        policy = Policy.from_pretrained(base, max_new_tokens=MAX_NEW_TOKENS)
        ref = policy.reference()
        for method, (preset, k) in OURS.items():
            out[method] = measure(policy, ref, VaderReward(), TRAIN_PROMPTS, estimator_config(preset, k=k),
                                  COMPLETIONS_PER_STEP, repeats, name=method, seed=0).as_dict()
        for method in ES:
            if method not in methods:
                continue
            # one population of POPULATION members on COMPLETIONS_PER_STEP / POPULATION prompts per estimate
            cfg = es_config(method, POPULATION, SIGMA, None, ES_SHAPING, BETA_RLOO, None,
                            ES[method].get("member_batch"))
            out[method] = measure_es(policy, ref, VaderReward(), TRAIN_PROMPTS, cfg, COMPLETIONS_PER_STEP, repeats,
                                     name=method, seed=0).as_dict()
    return out


def _fmt(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=64)
    p.add_argument("--methods", default=",".join([*OURS, *ES, "trl-rloo"]))
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-rlhf"))
    p.add_argument("--no-doc", action="store_true", help="print only; do not update docs/benchmarks.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        run_worker(args)
        return

    from _report import command, machine, update_section

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "base-model"
    if not (base / "config.json").exists():
        from stochgrad.runs.threads import torch_threads
        from stochgrad.rlhf.tiny import build_pretrained
        with torch_threads(1):
            build_pretrained(base, seed=0)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    import importlib.util
    trl_missing = "trl-rloo" in methods and not all(importlib.util.find_spec(m) for m in ("trl", "datasets"))
    if trl_missing:
        print("trl-rloo: TRL (trl, datasets) is not installed here; left out of this run", flush=True)
        methods.remove("trl-rloo")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        for method in methods:             # interleaved, so machine load affects every method alike
            tag = method.replace(" ", "").replace("=", "")
            res_path = out / f"{tag}-seed{seed}.json"
            run_dir = out / f"{tag}-seed{seed}"
            if not res_path.exists():
                import shutil
                shutil.rmtree(run_dir, ignore_errors=True)
                cmd = [sys.executable, __file__, "--worker", method, "--seed", str(seed), "--base", str(base),
                       "--steps", str(args.steps), "--run-dir", str(run_dir), "--result", str(res_path)]
                print(f"running {method} seed {seed} ...", flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            results[method].append(json.loads(res_path.read_text()))
    var_path = out / f"variance-r{args.repeats}.json"
    var = json.loads(var_path.read_text()) if var_path.exists() else {}
    if not var or any(m in ES and m not in var for m in methods):
        var = {**var, **variance(str(base), args.repeats, methods)}
        var_path.write_text(json.dumps(var))

    from stochgrad.rlhf.demo_data import EVAL_PROMPTS, TRAIN_PROMPTS
    before = _before(str(base))
    pos_mean, pos_max, pos_rows = position_check(str(base))
    rows = [("| method | k (ES: population) | prompts/step | completions | held-out reward after | KL to pretrained | CPU s/step "
            "| wall s/step | peak RSS MB | RSS growth in training MB | relative grad variance | cos to mean |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method in methods:
        rs = results[method]
        k = OURS[method][1] if method in OURS else POPULATION if method in ES else TRL_K
        v = var.get(method) or var.get("rloo k=4" if method == "trl-rloo" else "")
        # The mean of the estimates is resolved when the leave-one-out cosine is clearly above 0 (3 standard
        # errors over the repeats); otherwise ‖E ĝ‖² is within its noise of 0 and so is any ratio to it (the
        # bootstrap error, which treats ‖E ĝ‖² as known, would be meaningless).
        resolved = v["cosine"] > 3 * v.get("cosine_std", 0.0) / math.sqrt(v["repeats"])
        rel = (f"{v['relative_variance']:.2f} ± {v['relative_variance_se']:.2f}" if resolved else
               f"not resolved: ‖E ĝ‖² estimate {v['mean_norm_sq']:.3g} against trace/R "
               f"{v['trace_variance'] / v['repeats']:.3g}, cosine {v['cosine']:.4f} ± "
               f"{v.get('cosine_std', math.nan) / math.sqrt(v['repeats']):.4f}")
        vtxt = (f"{rel} | {v['cosine']:.3f}" if method in OURS or method in ES
                else f"(same estimator as rloo k=4: {rel}) | ({v['cosine']:.3f})")
        label = method if method in OURS else f"{method} (pop. {POPULATION})" if method in ES else "TRL RLOOTrainer"
        rows.append(
            f"| {label} | {k} | {COMPLETIONS_PER_STEP // k} | "
            f"{rs[0]['completions']} | {_fmt([r['reward'] for r in rs])} | {_fmt([r['kl'] for r in rs], 2)} | "
            f"{_fmt([r['cpu_seconds_per_step'] for r in rs])} | {_fmt([r['seconds_per_step'] for r in rs])} | "
            f"{_fmt([r['peak_rss_mb'] for r in rs], 0)} | "
            f"{_fmt([r['peak_rss_mb'] - r['rss_ready_mb'] for r in rs], 0)} | {vtxt} |")
    ratio = ""
    if results.get("rloo k=4") and results.get("trl-rloo"):
        pairs = list(zip(results["trl-rloo"], results["rloo k=4"]))

        def per_seed(key: str) -> str:
            return ", ".join(f"{t[key] / o[key]:.2f}" for t, o in pairs)

        ratio = (f"TRL / ours (rloo k=4), per seed: CPU seconds per step {per_seed('cpu_seconds_per_step')}; "
                 f"wall seconds per step {per_seed('seconds_per_step')}; peak RSS {per_seed('peak_rss_mb')}.")
    reading = ""
    if results.get("rloo k=4") and results.get("trl-rloo"):
        o, t = results["rloo k=4"], results["trl-rloo"]

        def m(rs, key):
            return statistics.mean(r[key] for r in rs)

        def growth(rs):
            return statistics.mean(r["peak_rss_mb"] - r["rss_ready_mb"] for r in rs)

        verdict = ("at least TRL's reward, but our policy also moved further from the reference, so compare "
                   "reward and KL together" if m(o, "reward") >= m(t, "reward") else "below TRL's reward")

        def sd(rs, key):
            return statistics.stdev(r[key] for r in rs) if len(rs) > 1 else float("nan")

        diff = m(o, "reward") - m(t, "reward")
        diff_se = (sd(o, "reward") ** 2 / len(o) + sd(t, "reward") ** 2 / len(t)) ** 0.5
        checks = [("reward", m(o, "reward") >= m(t, "reward")),
                  ("CPU time per step", m(o, "cpu_seconds_per_step") < m(t, "cpu_seconds_per_step")),
                  ("wall time per step", m(o, "seconds_per_step") < m(t, "seconds_per_step")),
                  ("peak memory", m(o, "peak_rss_mb") < m(t, "peak_rss_mb"))]
        met = [name for name, ok in checks if ok]
        missed = [name for name, ok in checks if not ok]
        goal = ("met on every count" if not missed else
                f"met on {', '.join(met) or 'nothing'}; not met on {', '.join(missed)}")
        goal += (f". The reward margin is {diff:+.3f} ({diff / diff_se:.1f} standard errors of the difference over "
                 f"{len(o)} seeds)" if math.isfinite(diff_se) and diff_se > 0 else "")
        growth_note = ("; the memory a training step adds on top of the loaded model is larger for us (below)"
                       if growth(o) > growth(t) else "")
        reading = f"""Goal of issue 6 (at least TRL's reward per completion, with less time and memory per step): {goal}{growth_note}.

Reading, ours (rloo k=4) against TRL (the same estimator, the same completions):

- Held-out reward after {o[0]['completions']} completions: {m(o, 'reward'):.3f} against {m(t, 'reward'):.3f}, at a KL to
  the pretrained model of {m(o, 'kl'):.2f} against {m(t, 'kl'):.2f} nats per completion: {verdict}.
- Cost per update: TRL needs {m(t, 'cpu_seconds_per_step') / m(o, 'cpu_seconds_per_step'):.2f}× our CPU time and
  {m(t, 'peak_rss_mb') - m(o, 'peak_rss_mb'):.0f} MB more peak memory. (TRL's step also runs a no-gradient forward
  pass for the "old" log-probabilities, which one update per batch does not need; TRL also imports more.)
- Where we lose: the memory that training adds on top of the loaded model is {growth(o):.0f} MB for us against
  {growth(t):.0f} MB for TRL; most of ours appears in the first update. The lower peak comes from importing less,
  not from a leaner training step.
- GRPO's high reward comes with a KL {m(results['grpo'], 'kl') / m(o, 'kl'):.0f}× RLOO's: reward hacking (see
  docs/rlhf.md), not a better estimator.
""" if "grpo" in results else ""
    es_text = ""
    if any(m in ES for m in methods):
        es_text = f"""
`es` and `es-lowrank` (evolution strategies in parameter space): a population of {POPULATION} members ({POPULATION // 2}
antithetic pairs θ ± σε) completes the same {COMPLETIONS_PER_STEP // POPULATION} prompts once each, so an update also costs
{COMPLETIONS_PER_STEP} sampled completions (the trainer's `samples_seen` counts every member's). σ = {SIGMA:g}, fitness shaping
by {ES_SHAPING} and, for `es-lowrank`, rank 1 noise applied in activation space are the trainer's defaults;
`es-lowrank` samples its {POPULATION} members side by side in one batch (`--member-batch {ES['es-lowrank'].get('member_batch', 1)}`,
the same numbers to float rounding as one at a time). β = {BETA_RLOO}: k1 to the pretrained model in the fitness, the
objective of reinforce and rloo (the trainer's ES default is β = 0). The same Adam, learning rate and clipping; the
ES estimate's norm is of order √D/(Nσ), so the clipping at 1 is always active. Their gradient variance: one
population per estimate ({POPULATION} members × {COMPLETIONS_PER_STEP // POPULATION} prompts, the same {COMPLETIONS_PER_STEP} completions).
"""
    es_reading = ""
    if any(m in results for m in ES) and results.get("rloo k=4"):
        def mean_sd(rs, key, d=3):
            return _fmt([r[key] for r in rs], d)

        lines = [f"- `{m}`: held-out reward {mean_sd(results[m], 'reward')} (before: {before:.3f}), KL "
                 f"{mean_sd(results[m], 'kl', 2)} nats, CPU {mean_sd(results[m], 'cpu_seconds_per_step')} s per "
                 f"update, gradient cosine to the mean {var[m]['cosine']:.3f}" for m in ES if m in results]
        lines.append(f"- against `rloo k=4`: reward {mean_sd(results['rloo k=4'], 'reward')}, KL "
                     f"{mean_sd(results['rloo k=4'], 'kl', 2)}, CPU {mean_sd(results['rloo k=4'], 'cpu_seconds_per_step')} "
                     f"s per update, cosine {var['rloo k=4']['cosine']:.3f}")
        es_reading = ("Reading, ES against the action-space estimators at the same "
                      f"{results['rloo k=4'][0]['completions']} completions:\n\n" + "\n".join(lines) + "\n")
    trl_note = ("\nTRL's `RLOOTrainer` is not in this run: `trl` and `datasets` were not installed in the environment "
                "it ran in (`--methods` includes `trl-rloo` by default and runs it where they are; the previous "
                "run with TRL side by side is in the history of this file, e.g. commit 75c74d6).\n"
                if trl_missing else "")
    body = f"""## RLHF: REINFORCE-family estimators, evolution strategies and TRL's RLOOTrainer on the demo task

Tiny GPT-2 (2 layers, 4 heads, width 64, 137k parameters, byte-level BPE with 512 tokens) pretrained by the demo
recipe, fine-tuned towards positive VADER sentiment on the demo's {len(TRAIN_PROMPTS)} training prompts: {args.steps} updates
of {COMPLETIONS_PER_STEP} sampled completions each for every method, Adam (TRL: AdamW, weight decay 0) at {LR:g} with a
constant schedule, gradient clipping at 1, up to {MAX_NEW_TOKENS} new tokens, temperature 1. β = {BETA_RLOO} (k1 in the
reward) for reinforce, rloo and TRL; grpo uses its preset (β = 0.04, k3 in the loss). TRL runs with `num_iterations=1`,
`bf16=False`, `gradient_checkpointing=False`, `use_cpu=True`, so it computes the same estimator as our `rloo k=4`.
Held-out reward: mean VADER compound of {EVAL_K * len(EVAL_PROMPTS)} completions ({len(EVAL_PROMPTS)} held-out prompts × {EVAL_K},
same seed for every model); before training it is {before:.3f}. Mean ± standard deviation over seeds {args.seeds}
(each seed a separate process with one torch thread). Gradient variance: at the pretrained policy,
{args.repeats} estimates of {COMPLETIONS_PER_STEP} completions each, all parameters; relative = trace of the covariance /
‖E ĝ‖² (± a bootstrap standard error over the repeats; "not resolved" when the mean of the estimates is not
resolved, i.e. the mean leave-one-out cosine is within 3 standard errors of 0 and the mean of the estimates is
indistinguishable from 0: then ‖E ĝ‖² and trace/R are shown); cosine of each estimate to the mean of the others.
{es_text}{trl_note}
Command: `{command()}`
Machine: {machine()}; other CPU-heavy jobs (another benchmark, COCO) ran on the same 2 cores at the same time. Wall
seconds can be inflated by them; CPU seconds of the one-thread workers are far less disturbed. Compare ratios within
this table.

{chr(10).join(rows)}

{ratio}

{es_reading}
{reading}
TRL's `RLOOTrainer` scores completions (its log-probabilities for the loss and for the KL) with a forward pass
that passes no `position_ids`, while generation derives positions from the attention mask. For a model with
absolute position embeddings such as GPT-2 and left-padded prompts of different lengths, the two disagree: on
the pretrained demo model, over the {pos_rows} training prompts that get left padding in a batch of all
{len(TRAIN_PROMPTS)}, log π(y|x) of a sampled completion changes by {pos_mean:.2f} nats on average (at most
{pos_max:.2f}) when scored without position ids. Our policy passes position ids that skip the padding (a test
checks each row against the row scored alone).
"""
    print(body)
    (out / "table.md").write_text(body)
    if not args.no_doc:
        print(f"updated {update_section('rlhf', body)}")


def position_check(base: str) -> tuple[float, float, int]:
    """How much scoring without position ids (as TRL's training forward does) changes the log-probabilities
    of completions whose prompts were left-padded: mean and max |Δ log π(y|x)| over such rows, and their count."""
    import torch

    from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
    from stochgrad.rlhf.policy import Policy

    policy = Policy.from_pretrained(base, max_new_tokens=MAX_NEW_TOKENS)
    rollout = policy.sample(list(TRAIN_PROMPTS), 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = policy.token_log_probs(rollout).sum(1)
        ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], 1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1)
        t = rollout.completion_ids.shape[1]
        logits = policy.model(input_ids=ids, attention_mask=mask).logits[:, -(t + 1):-1].float()
        plain = (torch.log_softmax(logits, -1).gather(-1, rollout.completion_ids[..., None]).squeeze(-1)
                 * rollout.completion_mask).sum(1)
    padded = (rollout.prompt_mask == 0).any(1)
    diff = (ours - plain).abs()[padded]
    return float(diff.mean()), float(diff.max()), int(padded.sum())


def _before(base: str) -> float:
    import torch

    from stochgrad.rlhf.demo_data import EVAL_PROMPTS
    from stochgrad.rlhf.evaluate import evaluate
    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.rewards import VaderReward

    torch.set_num_threads(1)
    policy = Policy.from_pretrained(base, max_new_tokens=MAX_NEW_TOKENS)
    return evaluate(policy, VaderReward(), EVAL_PROMPTS, k=EVAL_K, seed=EVAL_SEED).reward


if __name__ == "__main__":
    main()
