"""``stochgrad rlhf variance``: the gradient variance of several estimators at one policy, as a run.

Each step measures one estimator (:func:`stochgrad.rlhf.diagnostics.measure`: ``repeats`` estimates with
``completions`` sampled completions each, from the run's seed, so an estimator's numbers do not depend on the
others; ``es``/``es-lowrank``: :func:`stochgrad.rlhf.es.diagnostics.measure_es`, one population per estimate
with the same number of completions). The run directory holds ``config.json``, ``metrics.jsonl`` (one row per estimator),
``checkpoint.pt``, ``variance.json``, ``plots/relative_variance.png`` and ``summary.md``.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from stochgrad.errors import InvalidArgumentError
from stochgrad.runs.threads import torch_threads
from stochgrad.rlhf.diagnostics import check_completions, measure
from stochgrad.rlhf.es.diagnostics import measure_es
from stochgrad.rlhf.es.update import ES_ESTIMATORS, LOWRANK_APPLY, SHAPINGS, EsConfig, es_config
from stochgrad.rlhf.estimators import PRESETS, EstimatorConfig, estimator_config
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import make_reward
from stochgrad.rlhf.trainer import load_prompts
from stochgrad.runs import Command, option, run
from stochgrad.runs.files import atomic_write_json, atomic_write_text, new_figure, save_figure


@dataclass
class VarianceConfig:
    """Settings of ``rlhf variance`` (saved as config.json; the CLI's options)."""

    model: str = option("", "directory (or hub id) of a transformers causal LM")
    reward: str = option("vader", "'vader', 'vader-completion', or the directory of a reward model")
    reward_label: int | None = option(None, "which logit of the reward model is the reward")
    estimators: list[str] = option(["reinforce", "rloo", "grpo", "reinforce++"], "comma-separated presets "
                                   "(and 'es', 'es-lowrank': evolution strategies in parameter space)")
    beta: float | None = option(None, "KL coefficient for every estimator (default: the preset's)")
    population: int = option(8, "es: members per estimate, even (antithetic pairs)")
    sigma: float = option(1e-3, "es: perturbation scale σ")
    rank: int | None = option(None, "es-lowrank: rank of the A·Bᵀ noise (default 1)")
    es_shaping: str = option("centred-ranks", "es: fitness shaping per population", choices=SHAPINGS)
    lowrank_apply: str | None = option(None, "es-lowrank: add x·B·Aᵀ to the layers' outputs ('activations', the "
                                             "default; no perturbed matrix is formed) or perturb the matrices "
                                             "('weights')", choices=LOWRANK_APPLY)
    member_batch: int | None = option(None, "es-lowrank: members sampled side by side in one batch (default 1: "
                                            "one at a time; same results to float rounding)")
    prompts: str = option("demo", "a text file with one prompt per line, or 'demo'")
    completions: int = option(32, "sampled completions per estimate")
    repeats: int = option(32, "estimates per estimator")
    projections: int | None = option(None, "measure on this many random projections instead of all parameters "
                                           "(large models)")
    max_new_tokens: int = option(32, "longest completion")
    seed: int = option(0, "seed")
    threads: int | None = option(None, "torch threads (default: torch's choice)", resumable=True)
    local_files_only: bool = option(False, "never contact the Hugging Face hub", resumable=True)

    def validate(self) -> None:
        if not self.model:
            raise InvalidArgumentError("model: give the directory (or hub id) of a causal LM")
        if not self.estimators:
            raise InvalidArgumentError("estimators: name at least one estimator")
        unknown = [n for n in self.estimators if n not in PRESETS and n not in ES_ESTIMATORS]
        if unknown:
            raise InvalidArgumentError(f"estimators: unknown {unknown}; choose from "
                                       f"{', '.join((*PRESETS, *ES_ESTIMATORS))}")
        for est in self.estimator_configs().values():
            check(self.completions, est)

    def estimator_configs(self) -> dict[str, EstimatorConfig | EsConfig]:
        """Each named estimator's configuration (validated)."""
        return {n: es_config(n, self.population, self.sigma, self.rank if n == "es-lowrank" else None,
                             self.es_shaping, self.beta, self.lowrank_apply if n == "es-lowrank" else None,
                             self.member_batch if n == "es-lowrank" else None)
                if n in ES_ESTIMATORS
                else estimator_config(n, beta=self.beta) for n in self.estimators}


def check(completions: int, config: EstimatorConfig | EsConfig, n_prompts: int | None = None) -> None:
    """:func:`~stochgrad.rlhf.diagnostics.check_completions` with ``config``'s completions per prompt."""
    if isinstance(config, EsConfig):
        check_completions(completions, config.population, n_prompts, "population")
    else:
        check_completions(completions, config.k, n_prompts)


class VarianceExperiment:
    """``rlhf variance`` as an :class:`~stochgrad.runs.Experiment`; building it loads the model and the reward."""

    unit = "estimator"

    def __init__(self, config: VarianceConfig, run_dir: Path | None = None) -> None:
        self.config = config
        self.configs = config.estimator_configs()
        self.prompts = load_prompts(config.prompts)
        for est in self.configs.values():
            check(config.completions, est, len(self.prompts))
        self.stack = ExitStack()
        try:
            self.stack.enter_context(torch_threads(config.threads))
            self.policy = Policy.from_pretrained(config.model, max_new_tokens=config.max_new_tokens,
                                                 local_files_only=config.local_files_only)
            self.reward = make_reward(config.reward, label=config.reward_label,
                                      local_files_only=config.local_files_only)
            self.reference = self.policy.reference() if any(c.beta > 0 for c in self.configs.values()) else None
        except BaseException:
            self.stack.close()
            raise
        self.next = 0

    def stop_reason(self) -> str | None:
        return "done" if self.next >= len(self.config.estimators) else None

    def step(self) -> dict:
        c, name = self.config, self.config.estimators[self.next]
        est = self.configs[name]
        how = measure_es if isinstance(est, EsConfig) else measure
        stats = how(self.policy, self.reference, self.reward, self.prompts, est, c.completions, c.repeats,
                    name=name, seed=c.seed, projections=c.projections)
        self.next += 1
        return stats.as_dict()

    def progress(self) -> tuple[int, int]:
        return self.next, len(self.config.estimators)

    def state_dict(self) -> dict:
        return {"next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.next = int(state["next"])

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        stats = [{k: v for k, v in r.items() if k != "step"} for r in rows]
        atomic_write_json(run_dir / "variance.json", stats)
        fig, ax = new_figure((5.5, 3.4))
        shown = [s for s in stats if math.isfinite(s["relative_variance"])]   # a zero mean gradient has none
        ax.bar([s["name"] for s in shown], [s["relative_variance"] for s in shown],
               yerr=[s["relative_variance_se"] if math.isfinite(s["relative_variance_se"]) else 0.0 for s in shown],
               color="tab:blue", alpha=0.8, capsize=3)
        ax.set_ylabel("relative variance trace / ‖E ĝ‖²")
        ax.set_title(f"{self.config.completions} completions per estimate, {self.config.repeats} repeats",
                     fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        save_figure(fig, run_dir / "plots" / "relative_variance.png")
        atomic_write_text(run_dir / "summary.md", "# stochgrad rlhf variance\n\n```\n" + format_table(stats, self.config)
                          + "\n```\n\nPlot: `plots/relative_variance.png`; numbers: `variance.json`.\n")

    def close(self) -> None:
        self.stack.close()


RLHF_VARIANCE = Command("rlhf variance", VarianceConfig, VarianceExperiment)


def format_table(stats: list[dict], config: VarianceConfig) -> str:
    """The table ``rlhf variance`` prints."""
    what = f"{config.projections} random projections" if config.projections else "all parameters"
    lines = [f"{config.completions} sampled completions per estimate, {config.repeats} repeats, {what}",
             f"{'estimator':<12} {'k':>2} {'trace var':>11} {'|E g|^2':>11} {'relative (± se)':>16} "
             f"{'cos to mean':>11} {'reward':>7} {'s/estimate':>10}"]
    for s in stats:
        rel = f"{s['relative_variance']:.3g} ± {s['relative_variance_se']:.2g}"
        lines.append(f"{s['name']:<12} {s['k']:>2} {s['trace_variance']:>11.4g} {s['mean_norm_sq']:>11.4g} {rel:>16} "
                     f"{s['cosine']:>11.3f} {s['reward']:>7.3f} {s['seconds_per_estimate']:>10.3f}")
    return "\n".join(lines)


def run_variance(config: VarianceConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 ) -> tuple[list[dict], Path]:
    """Measure every estimator of ``config`` into the run directory ``out``; returns the statistics and it."""
    res = run(RLHF_VARIANCE, config, out, resume=resume, progress=progress)
    return [{k: v for k, v in r.items() if k != "step"} for r in res.rows], res.run_dir
