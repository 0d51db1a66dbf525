"""``stochgrad rlhf demo``: the whole story offline in a few minutes on 2 CPU cores.

1. Generate the demo corpus, train a byte-level BPE tokenizer on it and pretrain a tiny GPT-2 (saved in
   ``OUT/base-model``; reused when present).
2. At the pretrained policy, measure each estimator's gradient variance and cosine to the mean gradient at an
   equal number of sampled completions per estimate.
3. Fine-tune a copy with each estimator towards positive VADER sentiment, the same number of completions for
   each (``OUT/<estimator>/`` is a complete ``rlhf train`` run directory).
4. Evaluate before and after on held-out prompts with identical random numbers: reward, KL to the pretrained
   model, example texts. Write ``OUT/summary.md``, ``OUT/demo.json`` and ``OUT/plots/reward_vs_completions.png``.

Running the same command again reuses everything already finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stochgrad.errors import InvalidArgumentError
from stochgrad.rlhf._threads import torch_threads
from stochgrad.runs.files import atomic_write_json, atomic_write_text, prepare_run_dir, save_figure


@dataclass
class DemoConfig:
    """The demo's settings (defaults run in about two to four minutes on 2 busy cores)."""

    estimators: tuple[str, ...] = ("reinforce", "rloo", "grpo")
    steps: int = 60
    completions_per_step: int = 32
    lr: float = 5e-4
    max_new_tokens: int = 16
    pretrain_steps: int = 600
    n_sentences: int = 20000
    variance_repeats: int = 24
    eval_k: int = 8
    seed: int = 0
    threads: int | None = 1
    estimator_options: dict = field(default_factory=dict)


def _comparison_plot(curves: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, records in curves.items():
        x = [r["samples_seen"] for r in records]
        window = 5
        for ax, key in zip(axes, ("reward_mean", "kl")):
            y = [r[key] for r in records]
            smooth = [sum(y[max(0, i - window + 1): i + 1]) / len(y[max(0, i - window + 1): i + 1])
                      for i in range(len(y))]
            ax.plot(x, smooth, label=name, lw=1.3)
    axes[0].set_ylabel("reward (step mean, 5-step average)")
    axes[1].set_ylabel("KL(π_θ ‖ π_ref) per completion")
    for ax in axes:
        ax.set_xlabel("sampled completions")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("stochgrad rlhf demo: tiny GPT-2 towards positive sentiment (VADER)", fontsize=10)
    return save_figure(fig, path)


def run_demo(config: DemoConfig, out: str | Path, progress: bool = True, log=print) -> dict:
    """Run the demo into ``out``; returns what ``demo.json`` holds."""
    import torch
    from tqdm.auto import tqdm

    from stochgrad.rlhf.demo_data import EVAL_PROMPTS, TRAIN_PROMPTS
    from stochgrad.rlhf.diagnostics import measure
    from stochgrad.rlhf.estimators import estimator_config
    from stochgrad.rlhf.evaluate import evaluate
    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.rewards import VaderReward
    from stochgrad.rlhf.tiny import build_pretrained
    from stochgrad.rlhf.trainer import TrainConfig, run_train

    if not config.estimators:
        raise InvalidArgumentError("estimators: name at least one estimator")
    est_configs = {name: estimator_config(name, **config.estimator_options) for name in config.estimators}
    for name, est in est_configs.items():
        if config.completions_per_step % est.k:
            raise InvalidArgumentError(f"completions_per_step: {config.completions_per_step} is not a multiple of "
                                       f"k={est.k} of {name}")
    run_dir = prepare_run_dir(out)
    t_start = time.perf_counter()
    reward_fn = VaderReward()
    with torch_threads(config.threads):
        base = run_dir / "base-model"
        if (base / "config.json").exists():
            log(f"[1/4] pretrained model: reusing {base}")
        else:
            log("[1/4] generating the corpus, training a tokenizer, pretraining a tiny GPT-2 ...")
            _, pre = build_pretrained(base, n_sentences=config.n_sentences, steps=config.pretrain_steps,
                                      seed=config.seed, progress=progress)
            log(f"      {pre.steps} steps in {pre.seconds:.0f} s, loss {pre.first_loss:.2f} -> {pre.final_loss:.2f} "
                "nats/token")
        policy = Policy.from_pretrained(str(base), max_new_tokens=config.max_new_tokens)
        n_params = sum(p.numel() for p in policy.parameters())
        reference = policy.reference()
        before = evaluate(policy, reward_fn, EVAL_PROMPTS, k=config.eval_k, seed=config.seed + 777)

        log(f"[2/4] gradient variance at the pretrained policy ({config.completions_per_step} completions per "
            f"estimate, {config.variance_repeats} repeats, all {n_params} parameters)")
        variance = {}
        bar = tqdm(total=config.variance_repeats * len(est_configs), desc="variance", disable=not progress,
                   leave=False)
        for name, est in est_configs.items():
            variance[name] = measure(policy, reference, reward_fn, TRAIN_PROMPTS, est, config.completions_per_step,
                                     config.variance_repeats, name=name, seed=config.seed,
                                     progress=lambda: bar.update(1)).as_dict()
        bar.close()

        log(f"[3/4] fine-tuning with each estimator: {config.steps} steps x {config.completions_per_step} "
            "completions")
        results, curves = {}, {}
        for name, est in est_configs.items():
            sub = run_dir / name
            train_cfg = TrainConfig(model=str(base), reward="vader", estimator=name, prompts="demo",
                                    completions_per_step=config.completions_per_step, steps=config.steps,
                                    lr=config.lr, max_new_tokens=config.max_new_tokens, seed=config.seed,
                                    checkpoint_every=max(1, config.steps // 4), sample_every=max(1, config.steps // 6),
                                    threads=config.threads, **{k: v for k, v in asdict(est).items()
                                                               if k in ("k", "beta", "baseline", "scaling",
                                                                        "kl_estimator", "kl_in", "level",
                                                                        "aggregation")})
            resume = (sub / "config.json").exists()
            res = run_train(train_cfg, sub, resume=resume, progress=progress)
            after = evaluate(res.policy, reward_fn, EVAL_PROMPTS, k=config.eval_k, seed=config.seed + 777,
                             reference=reference)
            recs = res.records
            seconds = sum(r["seconds"] for r in recs) / max(1, len(recs))
            results[name] = {"estimator": est.describe(), "after": asdict(after), "seconds_per_step": seconds,
                             "completions": recs[-1]["samples_seen"] if recs else 0}
            curves[name] = recs

    log("[4/4] results")
    plot = _comparison_plot(curves, run_dir / "plots" / "reward_vs_completions.png")
    n_eval = before.n
    head = (f"{'estimator':<12} {'k':>2} {'reward before':>13} {'after':>7} {'gain/1k compl.':>14} {'KL':>6} "
            f"{'rel. grad var (±se)':>19} {'cos to mean':>11} {'s/step':>7}")
    lines = [(f"held-out reward: mean VADER compound of {n_eval} completions ({len(EVAL_PROMPTS)} prompts x "
             f"{config.eval_k}); KL(π_θ ‖ π_pretrained) per completion (k1); gradient variance at the pretrained "
             f"policy, relative = trace / ‖E ĝ‖²"), head, "-" * len(head)]
    for name, res in results.items():
        after = res["after"]
        gain = (after["reward"] - before.reward) / max(1, res["completions"]) * 1000
        var = variance[name]
        rel = f"{var['relative_variance']:.2f} ± {var['relative_variance_se']:.2f}"
        lines.append(f"{name:<12} {est_configs[name].k:>2} {before.reward:>13.3f} {after['reward']:>7.3f} "
                     f"{gain:>14.3f} {after['kl']:>6.2f} {rel:>19} {var['cosine']:>11.3f} "
                     f"{res['seconds_per_step']:>7.3f}")
    table = "\n".join(lines)
    log(table)
    examples = ["", "examples (same prompts and random numbers), before:"]
    examples += [f"  [{e['reward']:+.2f}] {e['prompt']}|{e['completion']}" for e in before.examples]
    for name, res in results.items():
        examples.append(f"after {name}:")
        examples += [f"  [{e['reward']:+.2f}] {e['prompt']}|{e['completion']}" for e in res["after"]["examples"]]
    log("\n".join(examples))
    total = time.perf_counter() - t_start
    log(f"\nrun directory: {run_dir}   plot: {plot}   ({total:.0f} s)")
    summary = {"config": asdict(config), "before": asdict(before), "variance": variance, "results": results,
               "seconds": total, "threads": torch.get_num_threads()}
    atomic_write_json(run_dir / "demo.json", summary)
    atomic_write_text(run_dir / "summary.md", "# stochgrad rlhf demo\n\n```\n" + table + "\n" + "\n".join(examples)
                      + "\n```\n\nPlot: `plots/reward_vs_completions.png`; one run directory per estimator.\n")
    return json.loads(json.dumps(summary, default=str))
