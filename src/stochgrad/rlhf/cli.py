"""``stochgrad rlhf``: train, demo, variance, pretrain. Heavy imports happen only when a command runs."""

from __future__ import annotations

import argparse

from stochgrad.extras import needs_extras
from stochgrad.rlhf.estimators import PRESETS
from stochgrad.rlhf.trainer import RLHF_TRAIN
from stochgrad.runs.options import add_run_options

PRESET_HELP = {
    "reinforce": "Williams 1992: k=1, moving-average baseline, k1 KL in the reward, sequence level",
    "rloo": "Ahmadian et al. 2024: k=4, leave-one-out baseline, k1 KL in the reward, sequence level",
    "grpo": "Shao et al. 2024: k=4, (r - group mean) / group std, k3 KL in the loss, per-sequence token mean",
    "reinforce++": "Hu 2025: k=1, k1 KL per token in the reward, reward-to-go, batch-whitened, token mean",
}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``stochgrad rlhf`` and its subcommands; each declares the 'rlhf' extra, checked before it runs."""
    presets = "\n".join(f"  {n:<12} {PRESET_HELP[n]}" for n in PRESETS)
    p = sub.add_parser("rlhf", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="fine-tune a causal language model against a reward with REINFORCE-family estimators",
                       description="Fine-tune a Hugging Face causal LM against a reward with REINFORCE-family "
                                   "estimators; every estimator choice is an option.\n\nestimator presets:\n"
                                   + presets)
    rsub = p.add_subparsers(dest="rlhf_command", metavar="SUBCOMMAND")
    rsub.required = True

    t = rsub.add_parser("train", formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="fine-tune a model (run directory, checkpoints, --resume, plots)",
                        description="Fine-tune --model against --reward. Writes a run directory: config.json, "
                                    "metrics.jsonl, samples.jsonl,\ncheckpoint.pt, plots/reward.png, plots/kl.png, "
                                    "final/ (the fine-tuned model), summary.md.\n\nestimator presets:\n" + presets,
                        epilog="example: stochgrad rlhf train --model runs/rlhf-demo/base-model --reward vader "
                               "--estimator rloo --k 4 --beta 0.05 --steps 100 --lr 5e-4 --out runs/rloo")
    add_run_options(t, RLHF_TRAIN, "runs/rlhf")
    t.set_defaults(run=_run_train)
    needs_extras(t, "rlhf")

    d = rsub.add_parser("demo", formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="offline demo: pretrain a tiny GPT-2, fine-tune it to positive sentiment with 2-3 "
                             "estimators",
                        description="Fully offline: generate a corpus, train a tokenizer, pretrain a tiny GPT-2, "
                                    "measure each estimator's\ngradient variance, fine-tune towards positive VADER "
                                    "sentiment with each, and compare before/after\n(reward, KL, example texts). "
                                    "A few minutes on 2 CPU cores; rerunning reuses finished parts.")
    d.add_argument("--estimators", type=_csv, default=["reinforce", "rloo", "grpo"],
                   help="comma-separated presets (default: reinforce,rloo,grpo)")
    d.add_argument("--steps", type=int, default=60, help="updates per estimator (default: 60)")
    d.add_argument("--completions-per-step", type=int, default=32, help="default: 32")
    d.add_argument("--lr", type=float, default=5e-4, help="default: 5e-4")
    d.add_argument("--repeats", type=int, default=24, help="estimates per gradient-variance measurement (default: 24)")
    d.add_argument("--pretrain-steps", type=int, default=600, help="default: 600")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, fastest for a tiny model)")
    d.add_argument("--out", default="runs/rlhf-demo", help="run directory (default: runs/rlhf-demo)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(run=_run_demo)
    needs_extras(d, "rlhf")

    v = rsub.add_parser("variance", formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="gradient variance and cosine to the mean of several estimators at a fixed policy",
                        description="Repeat each estimator's gradient estimate --repeats times at the policy "
                                    "--model, with --completions sampled\ncompletions per estimate for every "
                                    "estimator; print the trace of the gradient covariance, the relative\nvariance "
                                    "(trace / squared norm of the mean) and the cosine of each estimate to the mean "
                                    "of the others.",
                        epilog="example: stochgrad rlhf variance --model runs/rlhf-demo/base-model --estimators "
                               "reinforce,rloo,grpo --completions 32 --repeats 32")
    v.add_argument("--model", required=True)
    v.add_argument("--reward", default="vader")
    v.add_argument("--reward-label", type=int, default=None)
    v.add_argument("--estimators", type=_csv, default=["reinforce", "rloo", "grpo", "reinforce++"])
    v.add_argument("--beta", type=float, default=None, help="KL coefficient for every estimator (default: preset's)")
    v.add_argument("--prompts", default="demo")
    v.add_argument("--completions", type=int, default=32, help="sampled completions per estimate (default: 32)")
    v.add_argument("--repeats", type=int, default=32, help="estimates per estimator (default: 32)")
    v.add_argument("--projections", type=int, default=None,
                   help="measure on this many random projections instead of all parameters (large models)")
    v.add_argument("--max-new-tokens", type=int, default=32)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--threads", type=int, default=None)
    v.add_argument("--local-files-only", action="store_true")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(run=_run_variance)
    needs_extras(v, "rlhf")

    pt = rsub.add_parser("pretrain", help="build the demo's tiny GPT-2 (corpus, tokenizer, pretraining) into a "
                                          "directory")
    pt.add_argument("--out", default="runs/rlhf-demo/base-model")
    pt.add_argument("--steps", type=int, default=600)
    pt.add_argument("--sentences", type=int, default=20000)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--threads", type=int, default=1)
    pt.add_argument("--no-progress", action="store_true")
    pt.set_defaults(run=_run_pretrain)
    needs_extras(pt, "rlhf")


def _run_train(args: argparse.Namespace) -> int:
    from stochgrad.rlhf.trainer import RLHF_TRAIN, run_train
    from stochgrad.runs.options import config_for

    res = run_train(config_for(RLHF_TRAIN, args), args.out, resume=args.resume, progress=not args.no_progress)
    recs = res.records
    if recs:
        print(f"reward (step mean) {recs[0]['reward_mean']:.3f} -> {recs[-1]['reward_mean']:.3f} after "
              f"{recs[-1]['samples_seen']} sampled completions ({recs[-1]['step']} steps); KL {recs[-1]['kl']:.3f}")
    print(f"run directory: {res.run_dir}")
    print(f"plots:         {res.run_dir / 'plots'}")
    print(f"model:         {res.run_dir / 'final'}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from stochgrad.rlhf.demo import DemoConfig, run_demo

    config = DemoConfig(estimators=tuple(args.estimators), steps=args.steps,
                        completions_per_step=args.completions_per_step, lr=args.lr, variance_repeats=args.repeats,
                        pretrain_steps=args.pretrain_steps, seed=args.seed, threads=args.threads)
    run_demo(config, args.out, progress=not args.no_progress)
    return 0


def _run_variance(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from stochgrad.errors import InvalidArgumentError
    from stochgrad.rlhf._threads import torch_threads
    from stochgrad.rlhf.diagnostics import measure
    from stochgrad.rlhf.estimators import estimator_config
    from stochgrad.rlhf.policy import Policy
    from stochgrad.rlhf.rewards import make_reward
    from stochgrad.rlhf.trainer import load_prompts

    if not args.estimators:
        raise InvalidArgumentError("estimators: name at least one estimator")
    configs = {n: estimator_config(n, beta=args.beta) for n in args.estimators}
    prompts = load_prompts(args.prompts)
    with torch_threads(args.threads):
        policy = Policy.from_pretrained(args.model, max_new_tokens=args.max_new_tokens,
                                        local_files_only=args.local_files_only)
        reward = make_reward(args.reward, label=args.reward_label, local_files_only=args.local_files_only)
        reference = policy.reference() if any(c.beta > 0 for c in configs.values()) else None
        bar = tqdm(total=args.repeats * len(configs), desc="variance", disable=args.no_progress, leave=False)
        rows = [measure(policy, reference, reward, prompts, c, args.completions, args.repeats, name=n,
                        seed=args.seed, projections=args.projections, progress=lambda: bar.update(1))
                for n, c in configs.items()]
        bar.close()
    what = f"{args.projections} random projections" if args.projections else "all parameters"
    print(f"{args.completions} sampled completions per estimate, {args.repeats} repeats, {what}")
    print(f"{'estimator':<12} {'k':>2} {'trace var':>11} {'|E g|^2':>11} {'relative (± se)':>16} "
          f"{'cos to mean':>11} {'reward':>7} {'s/estimate':>10}")
    for s in rows:
        rel = f"{s.relative_variance:.3g} ± {s.relative_variance_se:.2g}"
        print(f"{s.name:<12} {s.k:>2} {s.trace_variance:>11.4g} {s.mean_norm_sq:>11.4g} {rel:>16} "
              f"{s.cosine:>11.3f} {s.reward:>7.3f} {s.seconds_per_estimate:>10.3f}")
    return 0


def _run_pretrain(args: argparse.Namespace) -> int:
    from stochgrad.rlhf._threads import torch_threads
    from stochgrad.rlhf.tiny import build_pretrained

    with torch_threads(args.threads):
        path, res = build_pretrained(args.out, n_sentences=args.sentences, steps=args.steps, seed=args.seed,
                                     progress=not args.no_progress)
    print(f"pretrained {res.steps} steps in {res.seconds:.0f} s, loss {res.first_loss:.2f} -> {res.final_loss:.2f}"
          f" nats/token; model and tokenizer in {path}")
    return 0
