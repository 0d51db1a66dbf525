"""ES population members on Ray workers: each worker holds the model, only seeds and rewards cross the wire.

A worker (one Ray actor, :meth:`stochgrad.evaluators.Ray.hold`) builds the policy, the reward, the noise and an
optimiser once. Each step the driver sends every worker the same small job: the previous step's update (its
pair seeds and the pairs' shaped-fitness differences, M numbers), a fingerprint of θ, the step's prompts and the
worker's share of the members ``(noise seed, sampling seed, sign)``. The worker applies the update exactly as the
driver did (ε regenerated from the seeds, :func:`~stochgrad.rlhf.es.update.write_gradient`, the same clipping
and Adam step), checks that its θ now has the driver's fingerprint, evaluates its members and returns their
rewards, KL and lengths (and member 0's rollout, for the logged samples). This is the scheme of Salimans et al.
(2017): the weights never travel after the first step.

The fingerprint (a hash of the bytes of every trainable tensor) makes this safe: a worker whose θ differs from the
driver's (a replacement for a worker that died, a resumed run, a machine whose arithmetic differs in the last
bit) answers "stale" instead of evaluating, receives the driver's weights and optimiser state once, and evaluates
then. So the members are always evaluated at the driver's θ, and the numbers are those of evaluating them in
this process (*tested* on a local cluster); ``resyncs`` counts the full transfers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from stochgrad.errors import EvaluationError
from stochgrad.evaluators import Ray, RayHolders, _split
from stochgrad.rlhf.es.step import Member, MemberResult, evaluate_members, make_noise, trainable
from stochgrad.rlhf.es.update import EsConfig, write_gradient
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import RewardFunction, make_reward

if TYPE_CHECKING:
    from typing_extensions import Self


def fingerprint(params: Sequence[Tensor]) -> str:
    """A hash of the bytes of ``params`` (dtype and shape included): equal iff bitwise equal, in practice."""
    h = hashlib.blake2b(digest_size=16)
    for p in params:
        t = p.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its copy of the run (pickled once per worker).

    Attributes:
      model: the directory (or hub id) the driver's policy was loaded from; every worker must be able to read it.
      sampling: ``temperature``, ``top_k``, ``max_new_tokens`` of the policy.
      config: the ES options.
      lr: the Adam learning rate; max_grad_norm: the clipping (0 = off).
      reward: the reward's name (built on the worker) or a picklable reward function.
      reward_label: as in :func:`~stochgrad.rlhf.rewards.make_reward`.
      local_files_only: never contact the hub.
      threads: torch threads on the worker.
    """

    model: str
    sampling: dict
    config: EsConfig
    lr: float
    max_grad_norm: float
    reward: str | RewardFunction
    reward_label: int | None = None
    local_files_only: bool = False
    threads: int = 1

    def __call__(self) -> EsWorker:
        return EsWorker(self)


class EsWorker:
    """The object a Ray actor holds: policy (θ), reference (the starting model, when β > 0), reward, noise and
    an Adam optimiser built like the trainer's."""

    def __init__(self, spec: WorkerSpec) -> None:
        torch.set_num_threads(spec.threads)
        self.spec = spec
        self.policy = Policy.from_pretrained(spec.model, local_files_only=spec.local_files_only, **spec.sampling)
        self.reference = self.policy.reference() if spec.config.beta > 0 else None
        self.reward = (make_reward(spec.reward, label=spec.reward_label, local_files_only=spec.local_files_only)
                       if isinstance(spec.reward, str) else spec.reward)
        self.noise = make_noise(self.policy, spec.config.rank)
        self.params = trainable(self.policy)[1]
        self.optimizer = torch.optim.Adam(self.params, lr=spec.lr)
        self.fingerprint: str | None = None      # unknown until the driver's state arrives

    def apply_update(self, seeds: list[int], weights: list[float]) -> None:
        """The driver's update, repeated: ε from the seeds into ``.grad``, clipping, one Adam step."""
        cfg = self.spec.config
        self.optimizer.zero_grad(set_to_none=True)
        write_gradient(self.params, self.noise, seeds, torch.tensor(weights, dtype=torch.float64), cfg.sigma,
                       cfg.population)
        norm = self.spec.max_grad_norm
        torch.nn.utils.clip_grad_norm_(self.params, norm if norm > 0 else float("inf"))
        self.optimizer.step()
        self.fingerprint = fingerprint(self.params)


def _sync(worker: EsWorker, state: dict) -> str:
    worker.policy.model.load_state_dict(state["model"])
    worker.optimizer.load_state_dict(state["optimizer"])
    worker.fingerprint = fingerprint(worker.params)
    return worker.fingerprint


def _evaluate(worker: EsWorker, job: tuple) -> list[MemberResult] | None:
    update, expected, prompts, members, keep_first = job
    if update is not None and worker.fingerprint is not None and worker.fingerprint == update[0]:
        worker.apply_update(update[1], update[2])
    if worker.fingerprint != expected:
        return None    # stale: the driver sends its state
    return evaluate_members(worker.policy, worker.reference, worker.reward, prompts, worker.spec.config,
                            worker.noise, members, keep_first)


class RayPopulation:
    """A :data:`~stochgrad.rlhf.es.step.MemberEvaluator` on Ray workers that keep their own copy of θ.

    Args:
      evaluator: a :class:`~stochgrad.evaluators.Ray` evaluator (its cluster).
      spec: what each worker builds.
      policy, optimizer: the driver's; θ and the optimiser state are sent from them when a worker is stale.
      workers: actors (default: one per CPU of the cluster).

    After each :func:`~stochgrad.rlhf.es.step.es_step` with this evaluator, and after the driver's optimiser
    step, call :meth:`stage_update` with the population's seeds and pair weights: the workers apply it at the
    start of the next call. Use as a context manager, or call :meth:`close`, to stop the actors.
    """

    def __init__(self, evaluator: Ray, spec: WorkerSpec, policy: Policy, optimizer: torch.optim.Optimizer,
                 workers: int | None = None) -> None:
        self.spec, self.policy, self.optimizer = spec, policy, optimizer
        self.params = trainable(policy)[1]
        self.holders: RayHolders = evaluator.hold(spec, workers)
        self.resyncs = 0
        self._pending: tuple[str, list[int], list[float]] | None = None
        self._last: str | None = None

    def _state(self) -> dict[str, Any]:
        return {"model": self.policy.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def __call__(self, prompts: list[str], members: list[Member]) -> list[MemberResult]:
        import ray

        expected = fingerprint(self.params)
        update = self._pending if self._pending is not None and self._pending[0] == self._last else None
        n = len(self.holders)
        chunks = _split(members, n)
        chunks += [[] for _ in range(n - len(chunks))]     # every worker gets the update, members or not
        jobs = [(i, _evaluate, (update, expected, list(prompts), chunk, i == 0)) for i, chunk in enumerate(chunks)]
        results = self.holders.run(jobs)
        stale = [i for i, r in enumerate(results) if r is None]
        if stale:
            state = ray.put(self._state())
            calls: list[tuple] = []
            for i in stale:
                calls += [(i, _sync, state), jobs[i]]
            again = self.holders.run(calls)
            self.resyncs += len(stale)
            for k, i in enumerate(stale):
                if again[2 * k] != expected or again[2 * k + 1] is None:
                    raise EvaluationError(
                        f"Ray: worker {i} holds other weights than this process after receiving them "
                        f"(fingerprint {again[2 * k]} != {expected}); the workers must load the model as the driver "
                        "does (same stochgrad, torch and transformers)")
                results[i] = again[2 * k + 1]
        self._last, self._pending = expected, None
        return [r for chunk in results for r in chunk]

    def stage_update(self, seeds: Sequence[int], weights: Tensor) -> None:
        """The update the driver applied after the last call (pair seeds, ``u⁺ − u⁻`` per pair); the workers
        repeat it before the next evaluation."""
        assert self._last is not None, "stage_update before any population was evaluated"
        self._pending = (self._last, [int(s) for s in seeds], [float(w) for w in weights])

    def close(self) -> None:
        self.holders.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
