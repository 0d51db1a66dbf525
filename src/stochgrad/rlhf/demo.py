"""``stochgrad rlhf demo``: the whole story offline in a few minutes on 2 CPU cores.

1. Generate the demo corpus, train a byte-level BPE tokenizer on it and pretrain a tiny GPT-2 (saved in
   ``OUT/base-model``; reused when present).
2. At the pretrained policy, measure each estimator's gradient variance and cosine to the mean gradient at an
   equal number of sampled completions per estimate.
3. Fine-tune a copy with each estimator towards positive VADER sentiment, the same number of completions for
   each (``OUT/<estimator>/`` is a complete ``rlhf train`` run directory).
4. Evaluate before and after on held-out prompts with identical random numbers: reward, KL to the pretrained
   model, example texts. Write ``OUT/summary.md``, ``OUT/demo.json`` and ``OUT/plots/reward_vs_completions.png``.

``--resume`` continues an interrupted demo and reuses everything already finished; a ``base-model/`` already in
``OUT`` (from ``stochgrad rlhf pretrain``) is reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from stochgrad.errors import InvalidArgumentError
from stochgrad.runs.threads import torch_threads
from stochgrad.runs import Command, config_to_dict, option, run
from stochgrad.runs.files import atomic_write_json, atomic_write_text, new_figure, read_jsonl, save_figure


@dataclass
class DemoConfig:
    """The demo's settings (defaults run in about two to four minutes on 2 busy cores)."""

    estimators: tuple[str, ...] = option(("reinforce", "rloo", "grpo"), "comma-separated presets")
    steps: int = option(60, "updates per estimator")
    completions_per_step: int = option(32, "sampled completions per update")
    lr: float = option(5e-4, "Adam learning rate")
    max_new_tokens: int = option(16, "longest completion")
    pretrain_steps: int = option(600, "pretraining steps of the tiny GPT-2")
    n_sentences: int = option(20000, "sentences of the generated corpus")
    variance_repeats: int = option(24, "estimates per gradient-variance measurement", flags=("--repeats",))
    eval_k: int = option(8, "completions per held-out prompt in the evaluation")
    seed: int = option(0, "seed of every random number")
    threads: int | None = option(1, "torch threads (1 is fastest for a tiny model)", resumable=True)
    estimator_options: dict = option({}, "options passed to every preset", cli=False)

    def estimator_configs(self) -> dict:
        from stochgrad.rlhf.estimators import estimator_config

        if not self.estimators:
            raise InvalidArgumentError("estimators: name at least one estimator")
        out = {name: estimator_config(name, **self.estimator_options) for name in self.estimators}
        for name, est in out.items():
            if self.completions_per_step % est.k:
                raise InvalidArgumentError(f"completions_per_step: {self.completions_per_step} is not a multiple "
                                           f"of k={est.k} of {name}")
        return out

    def validate(self) -> None:
        self.estimator_configs()


def _comparison_plot(curves: dict[str, list[dict]], path: Path) -> Path:
    fig, axes = new_figure((10, 3.6), 1, 2)
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


class DemoExperiment:
    """The demo as an :class:`~stochgrad.runs.Experiment`. Its steps: pretrain (or reuse ``base-model/``) and
    evaluate the pretrained policy; each estimator's gradient variance; each estimator's fine-tuning (a complete
    ``rlhf train`` run in ``OUT/<estimator>/``, resumed where it stopped) and evaluation. A row holds the step's
    results; :meth:`finish` writes the table, ``demo.json``, ``summary.md`` and the plot from them."""

    def __init__(self, config: DemoConfig, run_dir: Path, progress: bool = False, log: Callable = print) -> None:
        self.config, self.run_dir, self.progress, self.log = config, run_dir, progress, log
        self.est_configs = config.estimator_configs()
        self.phases = [("pretrain", None), *[("variance", n) for n in config.estimators],
                       *[("train", n) for n in config.estimators]]
        self.next = 0
        self.stack = ExitStack()
        self.stack.enter_context(torch_threads(config.threads))
        self.policy = self.reference = None
        self.t_start = time.perf_counter()
        from stochgrad.rlhf.rewards import VaderReward

        self.reward_fn = VaderReward()

    @property
    def base(self) -> Path:
        return self.run_dir / "base-model"

    def _load(self) -> None:
        from stochgrad.rlhf.policy import Policy

        if self.policy is None:
            self.policy = Policy.from_pretrained(str(self.base), max_new_tokens=self.config.max_new_tokens)
            self.reference = self.policy.reference()

    def stop_reason(self) -> str | None:
        return "done" if self.next >= len(self.phases) else None

    def step(self) -> dict:
        phase, name = self.phases[self.next]
        row = getattr(self, f"_{phase}")(name)
        self.next += 1
        return {"phase": phase, "estimator": name, **row}

    def _pretrain(self, _: None) -> dict:
        from stochgrad.rlhf.demo_data import EVAL_PROMPTS
        from stochgrad.rlhf.evaluate import evaluate
        from stochgrad.rlhf.tiny import build_pretrained

        c = self.config
        if (self.base / "config.json").exists():
            self.log(f"[1/4] pretrained model: reusing {self.base}")
        else:
            self.log("[1/4] generating the corpus, training a tokenizer, pretraining a tiny GPT-2 ...")
            _, pre = build_pretrained(self.base, n_sentences=c.n_sentences, steps=c.pretrain_steps, seed=c.seed,
                                      progress=self.progress)
            self.log(f"      {pre.steps} steps in {pre.seconds:.0f} s, loss {pre.first_loss:.2f} -> "
                     f"{pre.final_loss:.2f} nats/token")
        self._load()
        before = evaluate(self.policy, self.reward_fn, EVAL_PROMPTS, k=c.eval_k, seed=c.seed + 777)
        return {"before": asdict(before)}

    def _variance(self, name: str) -> dict:
        from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
        from stochgrad.rlhf.diagnostics import measure

        c = self.config
        self._load()
        if name == c.estimators[0]:
            n_params = sum(p.numel() for p in self.policy.parameters())
            self.log(f"[2/4] gradient variance at the pretrained policy ({c.completions_per_step} completions per "
                     f"estimate, {c.variance_repeats} repeats, all {n_params} parameters)")
        stats = measure(self.policy, self.reference, self.reward_fn, TRAIN_PROMPTS, self.est_configs[name],
                        c.completions_per_step, c.variance_repeats, name=name, seed=c.seed)
        return {"variance": stats.as_dict()}

    def _train(self, name: str) -> dict:
        from stochgrad.rlhf.demo_data import EVAL_PROMPTS
        from stochgrad.rlhf.evaluate import evaluate
        from stochgrad.rlhf.trainer import TrainConfig, run_train

        c, est = self.config, self.est_configs[name]
        self._load()
        if name == c.estimators[0]:
            self.log(f"[3/4] fine-tuning with each estimator: {c.steps} steps x {c.completions_per_step} "
                     "completions")
        sub = self.run_dir / name
        train_cfg = TrainConfig(model=str(self.base), reward="vader", estimator=name, prompts="demo",
                                completions_per_step=c.completions_per_step, steps=c.steps, lr=c.lr,
                                max_new_tokens=c.max_new_tokens, seed=c.seed, checkpoint_every=max(1, c.steps // 4),
                                sample_every=max(1, c.steps // 6), threads=c.threads,
                                **{k: v for k, v in asdict(est).items()
                                   if k in ("k", "beta", "baseline", "scaling", "kl_estimator", "kl_in", "level",
                                            "aggregation")})
        res = run_train(train_cfg, sub, resume=(sub / "config.json").exists(), progress=self.progress)
        after = evaluate(res.policy, self.reward_fn, EVAL_PROMPTS, k=c.eval_k, seed=c.seed + 777,
                         reference=self.reference)
        recs = res.records
        return {"result": {"estimator": est.describe(), "after": asdict(after),
                           "seconds_per_step": sum(r["seconds"] for r in recs) / max(1, len(recs)),
                           "completions": recs[-1]["samples_seen"] if recs else 0}}

    def state_dict(self) -> dict:
        return {"next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.next = int(state["next"])

    def summary(self, rows: list[dict]) -> dict:
        """What ``demo.json`` holds."""
        import torch

        return {"config": config_to_dict(self.config), "before": rows[0]["before"],
                "variance": {r["estimator"]: r["variance"] for r in rows if r["phase"] == "variance"},
                "results": {r["estimator"]: r["result"] for r in rows if r["phase"] == "train"},
                "seconds": time.perf_counter() - self.t_start, "threads": torch.get_num_threads()}

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        from stochgrad.rlhf.demo_data import EVAL_PROMPTS

        c, summary = self.config, self.summary(rows)
        before, variance, results = summary["before"], summary["variance"], summary["results"]
        self.log("[4/4] results")
        curves = {name: read_jsonl(run_dir / name / "metrics.jsonl") for name in results}
        plot = _comparison_plot(curves, run_dir / "plots" / "reward_vs_completions.png")
        head = (f"{'estimator':<12} {'k':>2} {'reward before':>13} {'after':>7} {'gain/1k compl.':>14} {'KL':>6} "
                f"{'rel. grad var (±se)':>19} {'cos to mean':>11} {'s/step':>7}")
        lines = [(f"held-out reward: mean VADER compound of {before['n']} completions ({len(EVAL_PROMPTS)} prompts x "
                 f"{c.eval_k}); KL(π_θ ‖ π_pretrained) per completion (k1); gradient variance at the pretrained "
                 f"policy, relative = trace / ‖E ĝ‖²"), head, "-" * len(head)]
        for name, res in results.items():
            after = res["after"]
            gain = (after["reward"] - before["reward"]) / max(1, res["completions"]) * 1000
            var = variance[name]
            rel = f"{var['relative_variance']:.2f} ± {var['relative_variance_se']:.2f}"
            lines.append(f"{name:<12} {self.est_configs[name].k:>2} {before['reward']:>13.3f} {after['reward']:>7.3f} "
                         f"{gain:>14.3f} {after['kl']:>6.2f} {rel:>19} {var['cosine']:>11.3f} "
                         f"{res['seconds_per_step']:>7.3f}")
        table = "\n".join(lines)
        self.log(table)
        examples = ["", "examples (same prompts and random numbers), before:"]
        examples += [f"  [{e['reward']:+.2f}] {e['prompt']}|{e['completion']}" for e in before["examples"]]
        for name, res in results.items():
            examples.append(f"after {name}:")
            examples += [f"  [{e['reward']:+.2f}] {e['prompt']}|{e['completion']}" for e in res["after"]["examples"]]
        self.log("\n".join(examples))
        self.log(f"\nrun directory: {run_dir}   plot: {plot}   ({summary['seconds']:.0f} s in this session)")
        atomic_write_json(run_dir / "demo.json", summary)
        atomic_write_text(run_dir / "summary.md", "# stochgrad rlhf demo\n\n```\n" + table + "\n"
                          + "\n".join(examples) + "\n```\n\nPlot: `plots/reward_vs_completions.png`; one run "
                          "directory per estimator.\n")

    def close(self) -> None:
        self.stack.close()


def demo_command(progress: bool = False, log: Callable = print) -> Command:
    """The ``rlhf demo`` command, with where its messages go."""
    return Command("rlhf demo", DemoConfig, lambda cfg, run_dir: DemoExperiment(cfg, run_dir, progress, log))


RLHF_DEMO = demo_command()


def run_demo(config: DemoConfig, out: str | Path, resume: bool = False, progress: bool = True,
             log: Callable = print) -> dict:
    """Run (or, with ``resume``, continue) the demo into ``out``; returns what ``demo.json`` holds."""
    res = run(demo_command(progress, log), config, out, resume=resume, progress=False)
    return json.loads(json.dumps(res.experiment.summary(res.rows), default=str))
