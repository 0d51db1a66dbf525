"""``stochgrad rlhf``: train, demo, variance, pretrain. Heavy imports happen only when a command runs."""

from __future__ import annotations

import argparse

from stochgrad.extras import needs_extras
from stochgrad.rlhf.demo import RLHF_DEMO
from stochgrad.rlhf.estimators import PRESETS
from stochgrad.rlhf.variance import RLHF_VARIANCE
from stochgrad.rlhf.trainer import RLHF_TRAIN
from stochgrad.runs.options import add_run_options

PRESET_HELP = {
    "reinforce": "Williams 1992: k=1, moving-average baseline, k1 KL in the reward, sequence level",
    "rloo": "Ahmadian et al. 2024: k=4, leave-one-out baseline, k1 KL in the reward, sequence level",
    "grpo": "Shao et al. 2024: k=4, (r - group mean) / group std, k3 KL in the loss, per-sequence token mean",
    "reinforce++": "Hu 2025: k=1, k1 KL per token in the reward, reward-to-go, batch-whitened, token mean",
}


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
                                    "A few minutes on 2 CPU cores; --resume continues an interrupted demo\nand "
                                    "reuses what is finished.")
    add_run_options(d, RLHF_DEMO, "runs/rlhf-demo")
    d.set_defaults(run=_run_demo)
    needs_extras(d, "rlhf")

    v = rsub.add_parser("variance", formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="gradient variance and cosine to the mean of several estimators at a fixed policy",
                        description="Repeat each estimator's gradient estimate --repeats times at the policy "
                                    "--model, with --completions sampled\ncompletions per estimate for every "
                                    "estimator; print the trace of the gradient covariance, the relative\nvariance "
                                    "(trace / squared norm of the mean) and the cosine of each estimate to the mean "
                                    "of the others.\nWrites a run directory: config.json, metrics.jsonl (one line "
                                    "per estimator), checkpoint.pt,\nvariance.json, plots/relative_variance.png, "
                                    "summary.md.",
                        epilog="example: stochgrad rlhf variance --model runs/rlhf-demo/base-model --estimators "
                               "reinforce,rloo,grpo --completions 32 --repeats 32")
    add_run_options(v, RLHF_VARIANCE, "runs/rlhf-variance")
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
    from stochgrad.rlhf.demo import run_demo
    from stochgrad.runs.options import config_for

    run_demo(config_for(RLHF_DEMO, args), args.out, resume=args.resume, progress=not args.no_progress)
    return 0


def _run_variance(args: argparse.Namespace) -> int:
    from stochgrad.rlhf.variance import format_table, run_variance
    from stochgrad.runs.options import config_for

    config = config_for(RLHF_VARIANCE, args)
    stats, run_dir = run_variance(config, args.out, resume=args.resume, progress=not args.no_progress)
    print(format_table(stats, config))
    print(f"run directory: {run_dir}")
    return 0


def _run_pretrain(args: argparse.Namespace) -> int:
    from stochgrad.runs.threads import torch_threads
    from stochgrad.rlhf.tiny import build_pretrained

    with torch_threads(args.threads):
        path, res = build_pretrained(args.out, n_sentences=args.sentences, steps=args.steps, seed=args.seed,
                                     progress=not args.no_progress)
    print(f"pretrained {res.steps} steps in {res.seconds:.0f} s, loss {res.first_loss:.2f} -> {res.final_loss:.2f}"
          f" nats/token; model and tokenizer in {path}")
    return 0
