"""``stochgrad rlhf train``: fine-tune a causal LM against a reward, with a run directory and exact resume.

Every step draws P = N/k prompts (uniformly without replacement, from the run's generator), samples k
completions of each (N = ``completions_per_step``), scores them, builds the estimator's loss, and takes one
optimiser step. The run directory holds:

- ``config.json``: the :class:`TrainConfig`;
- ``metrics.jsonl``: one line per step (reward mean/std/min/max, KL, lengths, loss, gradient norm, wall and
  CPU seconds, completions sampled so far);
- ``samples.jsonl``: a few (prompt, completion, reward) every ``sample_every`` steps;
- ``checkpoint.pt``: weights, optimiser state, the generator's state, the estimator's state, step; written
  atomically every ``checkpoint_every`` steps and at the end, loaded with ``weights_only=True``;
- ``plots/reward.png``, ``plots/kl.png``: against sampled completions;
- ``final/``: the fine-tuned model and tokenizer (``save_pretrained``, renamed into place when complete);
- ``summary.md``.

With ``estimator="es"`` (or ``"es-lowrank"``) a step is one population of evolution strategies in parameter
space instead (:mod:`stochgrad.rlhf.es`): ``population`` members θ ± σε complete the same prompts, and the
estimate goes into ``.grad`` for the same optimiser; the run directory, checkpoints and resume are the same (the
ES state is the run's generator).
With ``evaluator="ray"`` the members run on Ray workers that each hold the model and
keep θ in step with this process from the seeds (:mod:`stochgrad.rlhf.es.remote`); the numbers are the same.

All input is checked (model, prompts, reward, estimator options) before anything is written. ``resume=True``
cuts the JSON lines back to the checkpoint's step and continues with the same weights, optimiser state and
random numbers, so an interrupted run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.runs.threads import torch_threads
from stochgrad.rlhf.estimators import (
    AGGREGATIONS,
    BASELINES,
    KL_PLACEMENTS,
    LEVELS,
    PRESETS,
    SCALINGS,
    EstimatorConfig,
    PolicyGradient,
    estimator_config,
)
from stochgrad.rlhf.es.step import es_step, make_noise, score_member, trainable
from stochgrad.rlhf.es.subspace import SubspaceConfig, SubspaceSearch
from stochgrad.rlhf.es.update import (
    ES_ESTIMATORS,
    LOWRANK_APPLY,
    SHAPINGS,
    EsConfig,
    es_config,
    pair_weights,
    shape_fitness,
)
from stochgrad.rlhf.kl import KL_ESTIMATORS
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import RewardFunction, evaluate_rewards, make_reward
from stochgrad.runs import Command, option, run
from stochgrad.runs.files import append_jsonl, atomic_write_text, new_figure, read_jsonl, save_figure

#: The action-space estimators' own options (left out for ES and the subspace estimators).
ACTION_SPACE_OPTIONS: tuple[str, ...] = ("k", "baseline", "scaling", "kl_estimator", "kl_in", "level", "aggregation")

#: ``--estimator subspace``: a registered estimator over θ = θ0 + P·z (:mod:`stochgrad.rlhf.es.subspace`).
SUBSPACE = "subspace"

#: Where ``--estimator es`` evaluates its members: this process, or Ray workers (:mod:`stochgrad.rlhf.es.remote`).
ES_EVALUATORS: tuple[str, ...] = ("serial", "ray")


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run (saved as config.json).

    Estimator options left at None take the preset's value (see :data:`stochgrad.rlhf.estimators.PRESETS`).
    ``prompts`` is ``"demo"`` (the demo's training prompts) or a text file with one prompt per line.
    """

    model: str = option("", "directory (or hub id) of a transformers causal LM (not needed with --resume)")
    reward: str = option("vader", "'vader' (prompt + completion), 'vader-completion', or the directory of a "
                                  "sequence-classification reward model")
    reward_label: int | None = option(None, "which logit of the reward model is the reward")
    estimator: str = option("rloo", "preset, or 'es'/'es-lowrank': evolution strategies in parameter space, or "
                                    "'subspace': a registered estimator over a random k-dimensional subspace",
                            choices=(*PRESETS, *ES_ESTIMATORS, SUBSPACE))
    k: int | None = option(None, "completions per prompt (default: the preset's)")
    beta: float | None = option(None, "KL coefficient β, 0: no reference model (default: the preset's; es: 0)")
    baseline: str | None = option(None, "baseline (default: the preset's)", choices=BASELINES)
    scaling: str | None = option(None, "advantage scaling (default: the preset's)", choices=SCALINGS)
    kl_estimator: str | None = option(None, "KL estimator (default: the preset's)", choices=KL_ESTIMATORS)
    kl_in: str | None = option(None, "KL in the reward or in the loss (default: the preset's)",
                               choices=KL_PLACEMENTS)
    level: str | None = option(None, "sequence, or token-level reward-to-go (default: the preset's)",
                               choices=LEVELS)
    aggregation: str | None = option(None, "sum over tokens, per-sequence mean, or mean over the batch's tokens "
                                           "(default: the preset's)", choices=AGGREGATIONS)
    population: int = option(8, "es: members per step, even (antithetic pairs)")
    sigma: float = option(1e-3, "es: perturbation scale σ in weight units")
    rank: int | None = option(None, "es-lowrank: rank r of the A·Bᵀ noise per weight matrix (default 1)")
    es_shaping: str = option("centred-ranks", "es: fitness shaping per population", choices=SHAPINGS)
    subspace_dim: int | None = option(None, "subspace: k, the dimension of z in θ = θ0 + P·z (default 16)")
    subspace_estimator: str | None = option(None, "subspace: the registered black-box estimator over z, e.g. "
                                                  "sf-antithetic (default), sf-loo, auto, ars")
    lowrank_apply: str | None = option(None, "es-lowrank: add x·B·Aᵀ to the layers' outputs ('activations', the "
                                             "default; no perturbed matrix is formed) or perturb the matrices "
                                             "('weights')", choices=LOWRANK_APPLY)
    member_batch: int | None = option(None, "es-lowrank: members sampled side by side in one batch (default 1: "
                                            "one at a time; same results to float rounding)")
    device: str = option("cpu", "where the model and the noise live ('cpu', 'cuda', 'cuda:1', ...)",
                         resumable=True)
    evaluator: str = option("serial", "es: where the population members run: this process, or Ray workers that "
                                      "hold the model (only seeds and rewards travel)", choices=ES_EVALUATORS,
                            resumable=True)
    workers: int | None = option(None, "es with --evaluator ray: worker actors (default: the cluster's CPUs; a "
                                       "local cluster gets this many CPUs)", resumable=True)
    ray_address: str | None = option(None, "es: join a Ray cluster ('auto' = the running one); implies "
                                           "--evaluator ray", resumable=True)
    prompts: str = option("demo", "a text file with one prompt per line, or 'demo'")
    completions_per_step: int = option(32, "sampled completions per update, a multiple of k")
    steps: int = option(100, "updates (may be raised on --resume)", resumable=True)
    lr: float = option(1e-5, "Adam learning rate")
    max_grad_norm: float = option(1.0, "gradient clipping, 0 = off")
    max_new_tokens: int = option(32, "longest completion")
    temperature: float = option(1.0, "sampling temperature")
    top_k: int = option(0, "sample from the k most likely tokens, 0 = all")
    seed: int = option(0, "seed of every random number")
    checkpoint_every: int = option(10, "steps between checkpoints")
    sample_every: int = option(10, "steps between logged samples")
    samples_to_log: int = option(4, "completions logged per logged step", cli=False)
    threads: int | None = option(None, "torch threads (default: torch's choice)", resumable=True)
    local_files_only: bool = option(False, "never contact the Hugging Face hub", resumable=True)

    @property
    def is_es(self) -> bool:
        return self.estimator in ES_ESTIMATORS

    @property
    def is_subspace(self) -> bool:
        return self.estimator == SUBSPACE

    @property
    def in_parameter_space(self) -> bool:
        """ES or the subspace estimators: members are perturbed weights, the population shares the prompts."""
        return self.is_es or self.is_subspace

    @property
    def on_ray(self) -> bool:
        """Whether the ES members run on Ray workers (``--evaluator ray`` or a ``--ray-address``)."""
        return self.evaluator == "ray" or self.ray_address is not None

    def _refuse(self, names: Sequence[str], whose: str) -> None:
        for name in names:
            if getattr(self, name) is not None:
                raise InvalidArgumentError(f"{name}: an option of {whose}; --estimator {self.estimator} does not "
                                           "use it (leave it out)")

    def subspace_config(self) -> SubspaceConfig:
        """The options of ``--estimator subspace``, validated (β defaults to 0: no reference)."""
        self._refuse(ACTION_SPACE_OPTIONS, "the action-space estimators")
        self._refuse(("rank", "lowrank_apply", "member_batch"), "es-lowrank")
        return SubspaceConfig(population=self.population, sigma=self.sigma,
                              dim=16 if self.subspace_dim is None else self.subspace_dim,
                              estimator=self.subspace_estimator or "sf-antithetic", shaping=self.es_shaping,
                              beta=0.0 if self.beta is None else self.beta).validate()

    def es_config(self) -> EsConfig:
        """The ES options of ``--estimator es``/``es-lowrank``, validated (β defaults to 0: no reference)."""
        self._refuse(ACTION_SPACE_OPTIONS, "the action-space estimators")
        self._refuse(("subspace_dim", "subspace_estimator"), "--estimator subspace")
        return es_config(self.estimator, self.population, self.sigma, self.rank, self.es_shaping, self.beta,
                         self.lowrank_apply, self.member_batch)

    def describe(self) -> str:
        """The estimator's choices in one line."""
        return self.method().describe()

    def method(self) -> EstimatorConfig | EsConfig | SubspaceConfig:
        """The estimator's configuration, validated: ES, subspace or action space."""
        if self.is_subspace:
            return self.subspace_config()
        return self.es_config() if self.is_es else self.estimator_config()

    def estimator_config(self) -> EstimatorConfig:
        if self.in_parameter_space:
            raise InvalidArgumentError(f"estimator: {self.estimator!r} is not an action-space estimator; "
                                       "see es_config() and subspace_config()")
        self._refuse(("subspace_dim", "subspace_estimator"), "--estimator subspace")
        return estimator_config(self.estimator, k=self.k, beta=self.beta, baseline=self.baseline,
                                scaling=self.scaling, kl_estimator=self.kl_estimator, kl_in=self.kl_in,
                                level=self.level, aggregation=self.aggregation)

    def validate(self) -> EstimatorConfig | EsConfig | SubspaceConfig:
        """Check the numbers and the estimator options (not the files: see :func:`load_prompts`)."""
        est = self.method()
        if not isinstance(self.device, str) or not self.device:
            raise InvalidArgumentError(f"device: need a torch device name such as 'cpu' or 'cuda'; got "
                                       f"{self.device!r}")
        if not self.model:
            raise InvalidArgumentError("model: give the directory (or hub id) of a causal LM")
        if self.evaluator not in ES_EVALUATORS:
            raise InvalidArgumentError(f"evaluator: got {self.evaluator!r}; choose one of {list(ES_EVALUATORS)}")
        if self.workers is not None and (not isinstance(self.workers, int) or isinstance(self.workers, bool)
                                         or self.workers < 1):
            raise InvalidArgumentError(f"workers: need an integer >= 1; got {self.workers!r}")
        if self.on_ray:
            if not self.is_es:
                raise InvalidArgumentError(f"evaluator: Ray workers evaluate ES population members; --estimator "
                                           f"{self.estimator} runs in this process (leave out --evaluator ray and "
                                           "--ray-address)")
            if self.device.split(":")[0] != "cpu":
                raise InvalidArgumentError(f"device: the Ray workers evaluate members on their CPUs, and the noise "
                                           f"drawn on {self.device!r} differs from the CPU's; use --device cpu with "
                                           "--evaluator ray")
        elif self.workers is not None:
            raise InvalidArgumentError(f"workers: only with --evaluator ray; got workers={self.workers} with "
                                       f"evaluator={self.evaluator!r}")
        for name in ("steps", "completions_per_step", "checkpoint_every", "sample_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name}: need an integer >= 1; got {value!r}")
        if not (self.lr > 0):
            raise InvalidArgumentError(f"lr: need a learning rate > 0; got {self.lr!r}")
        if self.in_parameter_space:
            if self.completions_per_step % est.population:
                raise BudgetError(f"completions_per_step: {self.completions_per_step} is not a multiple of "
                                  f"population={est.population} (every member completes the same prompts)")
            return est
        if self.completions_per_step % est.k:
            raise BudgetError(f"completions_per_step: {self.completions_per_step} is not a multiple of k={est.k} "
                              "(every prompt of a step gets k completions)")
        if est.scaling == "batch-std" and self.completions_per_step < 2:
            raise BudgetError("completions_per_step: batch-std scaling needs at least 2 completions per step")
        return est


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise InvalidArgumentError(f"device: cannot use {name!r}: {str(exc).splitlines()[0]}") from None
    return device


def load_prompts(spec: str | Sequence[str]) -> list[str]:
    """The prompt set: ``"demo"``, a path to a file with one prompt per line (blank lines skipped), or a list.

    Raises:
      InvalidArgumentError: naming ``prompts`` for a missing file or an empty set.
    """
    if isinstance(spec, str):
        if spec == "demo":
            from stochgrad.rlhf.demo_data import TRAIN_PROMPTS
            return list(TRAIN_PROMPTS)
        path = Path(spec)
        if not path.is_file():
            raise InvalidArgumentError(f"prompts: {spec!r} is not a file (one prompt per line) nor 'demo'")
        prompts = [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]
        where = f"the file {spec!r}"
    else:
        prompts, where = [p for p in spec if p.strip()], "the given list"
    if not prompts:
        raise InvalidArgumentError(f"prompts: {where} holds no prompts; need at least one non-blank prompt")
    return prompts


def _plot(records: list[dict], key: str, band: str | None, ylabel: str, title: str, path: Path) -> Path:
    fig, ax = new_figure((5.5, 3.6))
    x = [r["samples_seen"] for r in records]
    y = [r[key] for r in records]
    ax.plot(x, y, color="tab:blue", lw=1.2)
    if band is not None and records:
        lo = [r[key] - r[band] for r in records]
        hi = [r[key] + r[band] for r in records]
        ax.fill_between(x, lo, hi, color="tab:blue", alpha=0.15, lw=0)
    ax.set_xlabel("sampled completions")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def training_plots(records: list[dict], run_dir: Path, title: str) -> list[Path]:
    """``plots/reward.png`` (mean ± std of the step's rewards) and ``plots/kl.png`` against completions."""
    if not records:
        return []
    return [_plot(records, "reward_mean", "reward_std", "reward", title, run_dir / "plots" / "reward.png"),
            _plot(records, "kl", None, "KL(π_θ ‖ π_ref) per completion (k1)", title, run_dir / "plots" / "kl.png")]


@dataclass
class TrainResult:
    """The end of a run: its records and where it was written."""

    records: list[dict]
    run_dir: Path
    policy: Policy
    stopped: str


class _Run:
    """The state of one run: policy, reference, optimiser, estimator, generator, counters."""

    def __init__(self, config: TrainConfig, policy: Policy, reward_fn: RewardFunction, prompts: list[str],
                 remote_reward: str | RewardFunction | None = None) -> None:
        self.config, self.policy, self.reward_fn, self.prompts = config, policy, reward_fn, prompts
        self.est_config = config.method()
        self.estimator = None if config.in_parameter_space else PolicyGradient(self.est_config)
        self.noise = make_noise(policy, self.est_config.rank) if config.is_es else None
        self.reference = policy.reference() if self.est_config.beta > 0 else None
        self.search = None
        if config.is_subspace:      # θ0 = the model as loaded: the starting model, also on resume
            c = self.est_config
            self.search = SubspaceSearch(trainable(policy)[1], c.dim, c.sigma, c.estimator, c.population, config.seed)
            self.optimizer = torch.optim.Adam([self.search.loc], lr=config.lr)
        else:
            self.optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.samples_seen = 0
        self.ray = self.remote = None
        if config.is_es and config.on_ray:
            self._start_ray(config.reward if remote_reward is None else remote_reward)

    def _start_ray(self, reward: str | RewardFunction) -> None:
        from stochgrad.evaluators import make_evaluator
        from stochgrad.rlhf.es.remote import RayPopulation, WorkerSpec

        cfg, policy = self.config, self.policy
        spec = WorkerSpec(model=cfg.model, sampling={"temperature": policy.temperature, "top_k": policy.top_k,
                                                     "max_new_tokens": policy.max_new_tokens},
                          config=self.est_config, lr=cfg.lr, max_grad_norm=cfg.max_grad_norm, reward=reward,
                          reward_label=cfg.reward_label, local_files_only=cfg.local_files_only,
                          threads=cfg.threads or 1)
        self.ray = make_evaluator("ray", workers=cfg.workers, ray_address=cfg.ray_address)
        try:
            self.remote = RayPopulation(self.ray, spec, policy, self.optimizer, workers=cfg.workers)
        except BaseException:
            self.ray.close()
            raise

    def close(self) -> None:
        """Stop the Ray workers (and a local cluster started for this run)."""
        if self.remote is not None:
            self.remote.close()
            self.remote = None
        if self.ray is not None:
            self.ray.close()
            self.ray = None

    def state_dict(self) -> dict:
        return {"model": self.policy.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "estimator": self.estimator.state_dict() if self.estimator is not None else {},
                "subspace": self.search.state_dict() if self.search is not None else {},
                "step": self.step, "samples_seen": self.samples_seen}

    def load_state_dict(self, state: dict) -> None:
        self.policy.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.estimator is not None:
            self.estimator.load_state_dict(state["estimator"])
        if self.search is not None:
            self.search.load_state_dict(state["subspace"])
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])

    def _pick_prompts(self, n_prompts: int) -> list[str]:
        if n_prompts <= len(self.prompts):
            pick = torch.randperm(len(self.prompts), generator=self.generator)[:n_prompts].tolist()
        else:
            pick = torch.randint(len(self.prompts), (n_prompts,), generator=self.generator).tolist()
        return [self.prompts[i] for i in pick]

    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def _clip_and_step(self) -> float:
        cfg = self.config
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self._trainable(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        self.optimizer.step()
        return float(grad_norm)

    def _record(self, rewards: torch.Tensor, lengths: torch.Tensor, kl: torch.Tensor, kl_k3: torch.Tensor,
                returns: torch.Tensor, truncated: torch.Tensor, loss: float, grad_norm: float, t0: float,
                c0: float) -> dict:
        """The metrics every update writes: rewards and lengths ``[B]``, per-completion KL, returns (or ES
        fitness) and truncation flags; wall and CPU seconds since ``t0``, ``c0``."""
        return {
            "step": self.step, "samples_seen": self.samples_seen,
            "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "reward_min": float(rewards.min()), "reward_max": float(rewards.max()),
            "kl": float(kl.mean()), "kl_k3": float(kl_k3.mean()),
            "return_mean": float(returns.mean()), "length_mean": float(lengths.mean()),
            "length_max": int(lengths.max()), "truncated": float(truncated.float().mean()),
            "loss": loss, "grad_norm": grad_norm,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
        }

    def es_train_step(self) -> tuple[dict, list[dict]]:
        """One ES update: a population on the same prompts, the estimate into ``.grad``, one optimiser step."""
        cfg, est = self.config, self.est_config
        t0, c0 = time.perf_counter(), time.process_time()
        prompts = self._pick_prompts(cfg.completions_per_step // est.population)
        self.optimizer.zero_grad(set_to_none=True)
        out = es_step(self.policy, self.reference, self.reward_fn, prompts, est, self.noise, self.generator,
                      evaluate=self.remote)
        grad_norm = self._clip_and_step()
        if self.remote is not None:
            self.remote.stage_update(out.seeds, pair_weights(out.shaped))
        self.step += 1
        self.samples_seen += out.rewards.numel()
        rewards, lengths = out.rewards.flatten(), out.lengths.flatten().float()
        record = {**self._record(rewards, lengths, out.kl, out.kl_k3, out.fitness, out.truncated,
                                 -float(out.fitness.mean()), grad_norm, t0, c0),
                  "fitness_std": float(out.fitness.std())}
        if self.remote is not None:
            record["resyncs"] = self.remote.resyncs
        samples = []
        if self.step % cfg.sample_every == 0 or self.step == 1:
            first = out.first
            for j in range(min(cfg.samples_to_log, len(first))):
                samples.append({"step": self.step, "prompt": first.prompts[j], "completion": first.completions[j],
                                "reward": float(out.rewards[0, j])})
        return record, samples

    def subspace_train_step(self) -> tuple[dict, list[dict]]:
        """One update of μ: the estimator's members z_i evaluated at θ0 + P·z_i on the same prompts (one
        sampling seed for the whole population: common random numbers), its estimate of ∇_μ E F, one Adam step
        of μ, then the model's weights set to θ0 + P·μ."""
        cfg, est, search = self.config, self.est_config, self.search
        t0, c0 = time.perf_counter(), time.process_time()
        prompts = self._pick_prompts(cfg.completions_per_step // est.population)
        plan = search.plan(self.generator)
        sample_seed = int(torch.randint(2 ** 62, (1,), generator=self.generator))
        names, params = trainable(self.policy)
        results = [score_member(self.policy.with_parameters(dict(zip(names, search.values(z)))), self.reference,
                                self.reward_fn, prompts, est.beta, sample_seed, keep_rollout=i == 0)
                   for i, z in enumerate(plan.points)]
        rewards, kl = torch.stack([r.rewards for r in results]), torch.stack([r.kl for r in results])
        fitness = rewards.mean(1) - est.beta * kl.mean(1)
        direction, estimate = search.combine(plan, shape_fitness(fitness, est.shaping, est.std_eps))
        self.optimizer.zero_grad(set_to_none=True)
        search.loc.grad = -direction
        grad_norm = float(torch.nn.utils.clip_grad_norm_(
            [search.loc], cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")))
        self.optimizer.step()
        search.update(estimate)
        with torch.no_grad():
            for p, value in zip(params, search.values(search.loc.detach())):
                p.copy_(value)
        self.step += 1
        self.samples_seen += rewards.numel()
        lengths = torch.stack([r.lengths for r in results]).flatten().float()
        record = {**self._record(rewards.flatten(), lengths, kl, torch.stack([r.kl_k3 for r in results]), fitness,
                                 torch.stack([r.truncated for r in results]), -float(fitness.mean()), grad_norm,
                                 t0, c0),
                  "fitness_std": float(fitness.std()) if len(fitness) > 1 else 0.0,
                  "subspace_loc_norm": float(search.loc.detach().norm())}
        samples = []
        if self.step % cfg.sample_every == 0 or self.step == 1:
            first = results[0].rollout
            for j in range(min(cfg.samples_to_log, len(first))):
                samples.append({"step": self.step, "prompt": first.prompts[j], "completion": first.completions[j],
                                "reward": float(rewards[0, j])})
        return record, samples

    def train_step(self) -> tuple[dict, list[dict]]:
        if self.config.is_es:
            return self.es_train_step()
        if self.config.is_subspace:
            return self.subspace_train_step()
        cfg, est = self.config, self.est_config
        t0, c0 = time.perf_counter(), time.process_time()
        prompts = self._pick_prompts(cfg.completions_per_step // est.k)
        rollout = self.policy.sample(prompts, est.k, self.generator)
        t_sample = time.perf_counter()
        rewards = evaluate_rewards(self.reward_fn, rollout.prompts, rollout.completions)
        t_reward = time.perf_counter()
        logp = self.policy.token_log_probs(rollout)
        ref = None
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference.token_log_probs(rollout)
        out = self.estimator.loss(logp, rollout.completion_mask, rewards.to(logp.device), ref)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = self._clip_and_step()
        self.step += 1
        self.samples_seen += len(rollout)
        lengths = rollout.lengths.float()
        record = {**self._record(rewards, lengths, out.kl, out.kl_k3, out.returns, rollout.truncated,
                                 float(out.loss.detach()), grad_norm, t0, c0),
                  "seconds_sample": t_sample - t0, "seconds_reward": t_reward - t_sample}
        samples = []
        if self.step % cfg.sample_every == 0 or self.step == 1:
            for i in range(min(cfg.samples_to_log, len(rollout))):
                j = i * est.k   # one completion from each of the first prompts
                if j >= len(rollout):
                    break
                samples.append({"step": self.step, "prompt": rollout.prompts[j],
                                "completion": rollout.completions[j], "reward": float(rewards[j])})
        return record, samples


class TrainExperiment:
    """``rlhf train`` as an :class:`~stochgrad.runs.Experiment`: a step is one update.

    Building it loads the model and the reward and tokenizes every prompt, so bad input fails before anything
    is written; torch's thread count is set for the run's lifetime and restored by :meth:`close`.
    """

    unit = "step"

    def __init__(self, config: TrainConfig, run_dir: Path, reward_fn: RewardFunction | None = None,
                 prompts: Sequence[str] | None = None) -> None:
        self.config = config
        self.stack = ExitStack()
        try:
            prompt_list = load_prompts(list(prompts) if prompts is not None else config.prompts)
            self.stack.enter_context(torch_threads(config.threads))
            policy = Policy.from_pretrained(config.model, local_files_only=config.local_files_only,
                                            temperature=config.temperature, top_k=config.top_k,
                                            max_new_tokens=config.max_new_tokens)
            policy.model.to(_device(config.device))
            policy.encode(prompt_list)   # every prompt tokenizes and fits, before anything is written
            remote_reward = reward_fn     # a reward object given by the caller travels to Ray workers as it is
            if reward_fn is None:
                reward_fn = make_reward(config.reward, label=config.reward_label,
                                        local_files_only=config.local_files_only)
            self.run = _Run(config, policy, reward_fn, prompt_list, remote_reward)
        except BaseException:
            self.stack.close()
            raise
        self.samples_path = run_dir / "samples.jsonl"

    def stop_reason(self) -> str | None:
        return "steps" if self.run.step >= self.config.steps else None

    def step(self) -> dict:
        record, samples = self.run.train_step()
        for sample in samples:
            append_jsonl(self.samples_path, sample)
        return {k: v for k, v in record.items() if k != "step"}

    def progress(self) -> tuple[int, int]:
        return self.run.step, self.config.steps

    def postfix(self, row: dict) -> dict:
        return {"reward": f"{row['reward_mean']:.3f}", "kl": f"{row['kl']:.3f}"}

    def state_dict(self) -> dict:
        return self.run.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.run.load_state_dict(state)

    def restored(self, run_dir: Path, step: int) -> None:
        """Drop the samples logged after the checkpoint being resumed from."""
        kept = [r for r in read_jsonl(self.samples_path) if r["step"] <= step]
        atomic_write_text(self.samples_path, "".join(json.dumps(r) + "\n" for r in kept))

    def finish(self, run_dir: Path, rows: list[dict], stopped: str) -> None:
        finish(run_dir, self.config, rows, self.run.policy)

    def close(self) -> None:
        try:
            self.run.close()
        finally:
            self.stack.close()


RLHF_TRAIN = Command("rlhf train", TrainConfig, TrainExperiment)


def run_train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
              callback: Callable[[TrainExperiment, dict], bool | None] | None = None,
              reward_fn: RewardFunction | None = None, prompts: Sequence[str] | None = None) -> TrainResult:
    """Run (or resume) a fine-tuning run into the run directory ``out``.

    Args:
      config: the run's settings; on resume they must equal the saved ones (``steps`` may be raised).
      out: the run directory.
      resume: continue the run in ``out`` from its checkpoint.
      progress: show a progress bar.
      callback: ``callback(experiment, record)`` after each step's record is written; True stops the run.
      reward_fn: a reward function object to use instead of ``config.reward`` (for library use; the name saved
        in config.json is then only a label, and resuming needs the same object passed again).
      prompts: a prompt list to use instead of ``config.prompts`` (same remark).
    Returns:
      :class:`TrainResult`.
    """
    command = RLHF_TRAIN if reward_fn is None and prompts is None else Command(
        RLHF_TRAIN.name, TrainConfig, lambda cfg, run_dir: TrainExperiment(cfg, run_dir, reward_fn, prompts))
    res = run(command, config, out, resume=resume, progress=progress, callback=callback)
    return TrainResult(res.rows, res.run_dir, res.experiment.run.policy, res.stopped)


def finish(run_dir: Path, config: TrainConfig, records: list[dict], policy: Policy) -> None:
    """Plots, the final model directory and summary.md."""
    from stochgrad.rlhf.policy import save_pretrained_atomic

    title = f"{config.estimator} ({config.describe()}), seed {config.seed}"
    training_plots(records, run_dir, title)
    save_pretrained_atomic(policy.model, policy.tokenizer, run_dir / "final")
    lines = [f"# stochgrad rlhf train: {config.estimator}", "", f"- estimator: {config.describe()}",
             f"- model: `{config.model}`; reward: `{config.reward}`", f"- steps: {len(records)} of {config.steps}"]
    if records:
        first, last = records[0], records[-1]
        lines += [f"- completions sampled: {last['samples_seen']}",
                  (f"- reward (step mean): {first['reward_mean']:.3f} at step 1 -> {last['reward_mean']:.3f} at "
                  f"step {last['step']}"),
                  f"- KL(π_θ ‖ π_ref) per completion (k1): {last['kl']:.3f}",
                  f"- mean completion length: {last['length_mean']:.1f} tokens",
                  f"- seconds per step (mean): {sum(r['seconds'] for r in records) / len(records):.3f}"]
    lines += ["", ("Plots: `plots/reward.png`, `plots/kl.png`; metrics: `metrics.jsonl`; samples: `samples.jsonl`; "
              "model: `final/`; checkpoint: `checkpoint.pt`."), ""]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines))
