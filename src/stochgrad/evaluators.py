"""How f is evaluated on a plan's points: in one vectorised call, point by point, or elsewhere.

An evaluator is any callable ``evaluator(f, points) -> values`` with points ``[B, *batch, D]`` and values
``[B, *batch]``. The estimators never care which one ran, so one seed gives the same numbers on each.

:class:`Serial`, :class:`ProcessPool` and :class:`Ray` also have ``map(fn, items) -> list``: ``fn`` applied to
each item, results in the order of the items, for work that is not "one number per point" (an RL rollout
returns its return, its length and the statistics of the states it saw). The parallel ones re-run the items
of a worker that died (the process was killed, the machine ran out of memory) on a fresh worker, up to
``max_restarts`` times per call, so a long run goes on; ``restarts`` counts the re-runs.

For work whose state should stay on the workers (a language model, for ES), :meth:`Ray.hold` starts actors that
each build an object once and then run small calls on it (:class:`RayHolders`).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from stochgrad.errors import EvaluationError, InvalidArgumentError
from stochgrad.extras import require

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")

class Vectorized:
    """Call f once on the whole batch: ``f(points [B, *batch, D]) -> [B, *batch]`` (the default)."""

    def __call__(self, f: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
        return f(points)

    def __repr__(self) -> str:
        return "Vectorized()"


class Serial:
    """Call a function of one point, ``f(x [D]) -> float``, on every point in turn.

    Values that are tensors keep their autograd graph, so a differentiable f of one point also works with
    :class:`~stochgrad.Pathwise`.
    """

    def __call__(self, f: Callable[[Tensor], float | Tensor], points: Tensor) -> Tensor:
        flat = points.reshape(-1, points.shape[-1])
        out = []
        for i in range(flat.shape[0]):
            v = f(flat[i])
            if isinstance(v, Tensor):
                if v.numel() != 1:
                    raise EvaluationError(
                        f"Serial: f must return one number per point; got a tensor of shape {list(v.shape)} "
                        f"for points[{i}]")
                out.append(v.reshape(()).to(points.dtype if points.is_floating_point() else v.dtype))
            else:
                try:
                    out.append(torch.tensor(float(v), dtype=points.dtype if points.is_floating_point()
                                            else torch.get_default_dtype()))
                except (TypeError, ValueError) as exc:
                    raise EvaluationError(
                        f"Serial: f must return one number per point; got {type(v).__name__} for points[{i}]"
                    ) from exc
        return torch.stack(out).reshape(points.shape[:-1])

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(item) for item in items]`` in this process."""
        return [fn(item) for item in items]

    def close(self) -> None:
        """Nothing to stop (for symmetry with the parallel evaluators)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Serial()"


def _init_worker() -> None:
    torch.set_num_threads(1)


def _evaluate_chunk(f: Callable, chunk: Tensor, per_point: bool) -> Tensor:
    if per_point:
        return Serial()(f, chunk)
    return torch.as_tensor(f(chunk))


def _map_chunk(fn: Callable, chunk: list) -> list:
    return [fn(item) for item in chunk]


def _split(items: Sequence[Any], n_chunks: int) -> list[list[Any]]:
    """Contiguous chunks, as even as possible, in order."""
    n = len(items)
    n_chunks = max(1, min(n, n_chunks))
    bounds = [round(i * n / n_chunks) for i in range(n_chunks + 1)]
    return [list(items[bounds[i]:bounds[i + 1]]) for i in range(n_chunks)]


def _pickling_error(name: str, exc: BaseException) -> EvaluationError | None:
    text = str(exc).lower()
    if isinstance(exc, pickle.PicklingError) or "pickle" in text or "can't get" in text:
        return EvaluationError(
            f"{name}: f must be picklable to reach the worker processes (a function defined at the top level "
            f"of an importable module, not a lambda or a local function): {exc}")
    return None


class WorkerLostError(EvaluationError):
    """Workers kept dying: the items were re-run ``max_restarts`` times and a worker died every time."""


class ProcessPool:
    """Evaluate f in worker processes on this machine.

    Args:
      workers: processes to use (default: every core).
      per_point: f is a function of one point ``[D] -> float`` (default) or of a chunk ``[n, D] -> [n]``.
      chunks_per_worker: the points are split into this many chunks per worker, for load balance.
      start_method: multiprocessing start method; "spawn" (default) is safe with torch and threads, and needs
        f to be importable (a function defined at the top level of a module, not a lambda).
      max_restarts: in one call, how many times the pool is rebuilt and the unfinished chunks re-run after a
        worker died, before :class:`WorkerLostError` is raised.

    The values come back in the order of the points, so one seed gives the same estimate as ``Vectorized``.
    Use as a context manager, or call :meth:`close`, to stop the workers.
    """

    def __init__(self, workers: int | None = None, per_point: bool = True, chunks_per_worker: int = 4,
                 start_method: str = "spawn", max_restarts: int = 3) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.per_point = per_point
        self.chunks_per_worker = chunks_per_worker
        self.start_method = start_method
        self.max_restarts = max_restarts
        self.restarts = 0
        self._executor = None

    def _pool(self):
        if self._executor is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(self.start_method),
                                                 initializer=_init_worker)
        return self._executor

    def __call__(self, f: Callable, points: Tensor) -> Tensor:
        lead = points.shape[:-1]
        flat = points.detach().reshape(-1, points.shape[-1])
        n_chunks = max(1, min(flat.shape[0], self.workers * self.chunks_per_worker))
        chunks = list(flat.tensor_split(n_chunks))
        try:
            parts = list(self._pool().map(_evaluate_chunk, [f] * len(chunks), chunks,
                                          [self.per_point] * len(chunks)))
        except (AttributeError, TypeError, pickle.PicklingError) as exc:
            if "pickle" in str(exc).lower() or "can't get" in str(exc).lower():
                raise EvaluationError(
                    f"ProcessPool: f must be picklable to reach the worker processes (a function defined at "
                    f"the top level of an importable module, not a lambda or a local function): {exc}") from exc
            raise
        values = torch.cat([p.reshape(-1) for p in parts])
        return values.reshape(lead)

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(item) for item in items]`` on the workers, in order; the chunks of a worker that died are re-run
        on a fresh pool (``restarts`` counts them).

        Raises:
          WorkerLostError: workers died ``max_restarts + 1`` times in this call.
          EvaluationError: ``fn`` cannot be pickled.
          Whatever ``fn`` raised, re-raised here (the first failing item in order).
        """
        from concurrent.futures.process import BrokenProcessPool

        chunks = _split(items, self.workers * self.chunks_per_worker)
        results: list[list | None] = [None] * len(chunks)
        attempt = 0
        while True:
            todo = [i for i, r in enumerate(results) if r is None]
            if not todo:
                break
            pool = self._pool()
            try:
                futures = {i: pool.submit(_map_chunk, fn, chunks[i]) for i in todo}
            except BrokenProcessPool:
                futures = {}
            broken = not futures
            for i, fut in futures.items():
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    broken = True
                except (AttributeError, TypeError, pickle.PicklingError) as exc:
                    err = _pickling_error("ProcessPool", exc)
                    if err is not None:
                        raise err from exc
                    raise
            if broken:
                self._discard()
                attempt += 1
                if attempt > self.max_restarts:
                    raise WorkerLostError(
                        f"ProcessPool: a worker process died {attempt} times while evaluating "
                        f"{sum(len(chunks[i]) for i in todo)} item(s); gave up after max_restarts="
                        f"{self.max_restarts} re-runs")
                self.restarts += 1
        return [r for chunk in results for r in chunk]  # type: ignore[union-attr]

    def _discard(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProcessPool(workers={self.workers}, per_point={self.per_point})"


def _source_path() -> str:
    """The directory this copy of stochgrad is imported from (``…/src``)."""
    return str(Path(__file__).resolve().parents[1])


def _worker_identity(_: Any = None) -> dict[str, Any]:
    import stochgrad

    return {"pid": os.getpid(), "stochgrad": str(Path(stochgrad.__file__).resolve().parent)}


class Ray:
    """Evaluate on a Ray cluster: an existing one (``address="auto"`` or ``"ray://host:port"``) or, with
    ``address=None``, a local one started here (and stopped by :meth:`close`).

    Args:
      address: the cluster to join, or None to start a local cluster with ``num_cpus`` CPUs.
      num_cpus: CPUs of the local cluster (default: every core); ignored when joining.
      per_point: as in :class:`ProcessPool`.
      chunks_per_worker: chunks per CPU of the cluster, for load balance.
      max_restarts: re-runs, in one call, of the chunks whose worker died.
      runtime_env: merged into the job's Ray runtime environment. ``PYTHONPATH`` always starts with the
        directory this copy of stochgrad is imported from (then the driver's own ``PYTHONPATH``), so the workers
        import the same code as the driver.

    One seed gives the same numbers as on :class:`ProcessPool`: the work and its order are the same, and Ray's
    own task retries are turned off so that a dead worker is re-run (and counted in ``restarts``) here.

    Raises:
      MissingExtraError: the ``ray`` extra is not installed.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, per_point: bool = True,
                 chunks_per_worker: int = 4, max_restarts: int = 3,
                 runtime_env: dict[str, Any] | None = None) -> None:
        require("ray", "evaluators.Ray")
        import ray

        self.address, self.per_point = address, per_point
        self.chunks_per_worker, self.max_restarts, self.restarts = chunks_per_worker, max_restarts, 0
        env = dict(runtime_env or {})
        env_vars = dict(env.get("env_vars", {}))
        paths = [_source_path(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        if env_vars.get("PYTHONPATH"):
            paths.append(env_vars["PYTHONPATH"])
        env_vars["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["env_vars"] = env_vars
        self._started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            saved = os.environ.get("PYTHONPATH")
            if address is None:
                # A local cluster's processes inherit this environment: workers start with the right path, and
                # without a job runtime environment Ray can use the workers it starts ahead of time.
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
                os.environ["PYTHONPATH"] = env_vars["PYTHONPATH"]
                if set(env) != {"env_vars"} or set(env_vars) != {"PYTHONPATH"}:
                    kwargs["runtime_env"] = env
            else:
                kwargs["runtime_env"] = env
            try:
                # "local": a new cluster even when `ray start` has left an address in /tmp/ray (ray.init(None)
                # would join that one, or fail if it is gone)
                ray.init(address="local" if address is None else address, **kwargs)
            except ConnectionError as exc:
                raise EvaluationError(f"Ray: cannot join the cluster at address {address!r}: {exc}") from None
            finally:
                if address is None:
                    if saved is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = saved
            self._started_here = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._map = ray.remote(num_cpus=1, max_retries=0)(_map_chunk)

    def worker_identity(self) -> dict[str, Any]:
        """Process id and the stochgrad directory one worker imports (to check it runs the driver's code)."""
        import ray

        return ray.get(ray.remote(num_cpus=1, max_retries=0)(_worker_identity).remote())

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(item) for item in items]`` on the cluster, in order; chunks whose worker died are re-run.

        Raises:
          WorkerLostError: workers died ``max_restarts + 1`` times in this call.
          Whatever ``fn`` raised (the first failing item in order).
        """
        import ray
        from ray.exceptions import NodeDiedError, RayTaskError, WorkerCrashedError

        chunks = _split(items, self.workers * self.chunks_per_worker)
        results: list[list | None] = [None] * len(chunks)
        fn_ref = ray.put(fn)
        attempt = 0
        while True:
            todo = [i for i, r in enumerate(results) if r is None]
            if not todo:
                break
            refs = {i: self._map.remote(fn_ref, chunks[i]) for i in todo}
            died = False
            for i, ref in refs.items():
                try:
                    results[i] = ray.get(ref)
                except (WorkerCrashedError, NodeDiedError):
                    died = True
                except RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    if isinstance(cause, BaseException) and not isinstance(cause, RayTaskError):
                        raise cause from None
                    raise
            if died:
                attempt += 1
                if attempt > self.max_restarts:
                    raise WorkerLostError(
                        f"Ray: a worker died {attempt} times while evaluating "
                        f"{sum(len(chunks[i]) for i in todo)} item(s); gave up after max_restarts="
                        f"{self.max_restarts} re-runs")
                self.restarts += 1
        return [r for chunk in results for r in chunk]  # type: ignore[union-attr]

    def hold(self, factory: Callable[[], Any], n: int | None = None) -> RayHolders:
        """``n`` Ray actors (default: one per CPU of the cluster), each holding ``factory()``, built once on the
        actor, for work whose state should stay on the workers (a model) while only small arguments travel.

        Args:
          factory: a picklable callable with no arguments; it runs on each actor (and again on a replacement
            for an actor that died).
          n: how many actors, at least 1.
        """
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise InvalidArgumentError(f"workers: need at least 1; got {n!r}")
        return RayHolders(factory, n or self.workers, self.max_restarts)

    def __call__(self, f: Callable, points: Tensor) -> Tensor:
        lead = points.shape[:-1]
        flat = points.detach().reshape(-1, points.shape[-1])
        chunks = list(flat.tensor_split(max(1, min(flat.shape[0], self.workers * self.chunks_per_worker))))
        parts = self.map(_ChunkEvaluator(f, self.per_point), chunks)
        return torch.cat([p.reshape(-1) for p in parts]).reshape(lead)

    def close(self) -> None:
        """Disconnect; a local cluster started here is stopped."""
        import ray

        if self._started_here and ray.is_initialized():
            ray.shutdown()
        self._started_here = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ray(address={self.address!r}, workers={self.workers})"


class _Holder:
    """A Ray actor's body: the object ``factory()`` and calls of ``fn(object, arg)`` on it."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        torch.set_num_threads(1)
        self.held = factory()

    def call(self, fn: Callable[[Any, Any], T], arg: Any) -> T:
        return fn(self.held, arg)


class RayHolders:
    """Ray actors each holding one object built by ``factory()`` on the actor (:meth:`Ray.hold`).

    :meth:`run` calls ``fn(held, arg)`` on chosen actors. An actor that died is replaced by a new one (its object
    built again from ``factory``) and its calls re-run, up to ``max_restarts`` times per :meth:`run`;
    ``restarts`` counts the replacements. The caller decides what a replacement's fresh object needs (the
    factory's state, not the state the dead actor had reached).
    """

    def __init__(self, factory: Callable[[], Any], n: int, max_restarts: int = 3) -> None:
        import ray

        self.factory, self.max_restarts, self.restarts = factory, max_restarts, 0
        self._cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Holder)
        self._factory_ref = ray.put(factory)
        self._actors = [self._cls.remote(self._factory_ref) for _ in range(n)]

    def __len__(self) -> int:
        return len(self._actors)

    def run(self, calls: Sequence[tuple[int, Callable[[Any, Any], T], Any]]) -> list[T]:
        """``[fn(held_i, arg) for (i, fn, arg) in calls]`` on actor i, in the order of ``calls``; the calls of one
        actor run in the order given.

        Raises:
          WorkerLostError: an actor died ``max_restarts + 1`` times in this call.
          Whatever ``fn`` raised (the first failing call in order).
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        for i, _, _ in calls:
            if not 0 <= i < len(self._actors):
                raise InvalidArgumentError(f"actor: index {i} out of range for {len(self._actors)} actors")
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        attempt = 0
        while todo:
            refs = [(c, self._actors[calls[c][0]].call.remote(calls[c][1], calls[c][2])) for c in todo]
            dead: set[int] = set()
            for c, ref in refs:
                try:
                    results[c] = ray.get(ref)
                except RayActorError:
                    dead.add(calls[c][0])
                except RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    if isinstance(cause, BaseException) and not isinstance(cause, RayTaskError):
                        raise cause from None
                    raise
            todo = [c for c, _ in refs if calls[c][0] in dead]
            if dead:
                attempt += 1
                if attempt > self.max_restarts:
                    raise WorkerLostError(f"Ray: an actor died {attempt} times while running {len(todo)} call(s); "
                                          f"gave up after max_restarts={self.max_restarts} replacements")
                for i in dead:
                    self._actors[i] = self._cls.remote(self._factory_ref)
                    self.restarts += 1
        return results

    def kill(self, i: int) -> None:
        """Stop actor ``i`` (for tests of the replacement); the next call on it builds a new one."""
        import ray

        ray.kill(self._actors[i], no_restart=True)

    def close(self) -> None:
        """Stop every actor."""
        import ray

        if ray.is_initialized():
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
        self._actors = []


class _ChunkEvaluator:
    """Picklable ``chunk -> values`` for :meth:`Ray.__call__`."""

    def __init__(self, f: Callable, per_point: bool) -> None:
        self.f, self.per_point = f, per_point

    def __call__(self, chunk: Tensor) -> Tensor:
        return _evaluate_chunk(self.f, chunk, self.per_point)


#: The names :func:`make_evaluator` takes.
EVALUATORS = ("process", "ray", "serial")


def make_evaluator(kind: str = "process", workers: int | None = None, ray_address: str | None = None,
                   per_point: bool = True) -> Serial | ProcessPool | Ray:
    """An evaluator by name, as the commands take it: ``evaluator(f, points)`` and ``map(fn, items)``.

    Args:
      kind: "process" (local worker processes), "ray" (a Ray cluster) or "serial" (this process).
      workers: processes for "process", CPUs of a local Ray cluster (default: every core).
      ray_address: "auto" (or "ray://…") joins an existing Ray cluster; None starts a local one. Giving an
        address implies ``kind="ray"``.
      per_point: for ``evaluator(f, points)`` on processes or Ray: f takes one point ``[D]`` (default) or a
        chunk ``[n, D] -> [n]``.
    """
    if ray_address is not None and kind == "process":
        kind = "ray"
    if kind not in EVALUATORS:
        raise InvalidArgumentError(f"evaluator: got {kind!r}; choose one of {list(EVALUATORS)}")
    if workers is not None and workers < 1:
        raise InvalidArgumentError(f"workers: need at least 1; got {workers}")
    if kind == "serial":
        return Serial()
    if kind == "ray":
        return Ray(address=ray_address, num_cpus=workers, per_point=per_point)
    return ProcessPool(workers=workers or os.cpu_count() or 1, per_point=per_point)
