"""``env_settings.executor: ray``: env loops as Ray async actors, the learner in the driver.

The driver (the Runner's event loop) keeps the trainers. Per worker, one task asks the
worker actor for batches of finished trajectories (``sample``), awaits the ObjectRefs from
asyncio, rebuilds :class:`Trajectory` objects and sends them into the same trajectory
channels the local env loop feeds, with the same lag bounding (``strict_on_policy``, two
buffers ahead otherwise): trainers cannot tell the difference.

- **Policy broadcast.** Each new snapshot is ``ray.put`` once, as plain arrays plus a
  header (``asynctrainer.scale.codec``); the reference goes to every worker with
  ``set_policy`` (a running ``sample`` picks it up between two steps) and with every
  ``sample`` call (a restarted worker gets it at once). Trajectories keep the version that
  acted (``policy_versions``); trainers report ``Policy/Lag``. With ``max_policy_lag`` set,
  trajectories older than that many versions are dropped and counted (``stale_trajectories``).
- **Backpressure.** A worker steps only inside a ``sample`` call, and at most
  ``max_in_flight`` calls per worker are outstanding (1 with ``strict_on_policy``); the next
  call is made only after the previous batch went into the (bounded, blocking) channels.
- **Faults.** Workers are created with ``max_restarts = env_settings.max_lifetime_restarts``.
  When one dies, its batches in flight and its trajectories in progress are lost: counted in
  ``lost_batches`` and ``dropped_trajectories``; Ray restarts it, the driver goes on asking
  it for batches, and training continues. A worker out of restarts is given up; when all are,
  :class:`EnvError` is raised.
- **Stop.** Cancelling the loop (the Runner does, then saves) closes and kills the workers,
  and shuts Ray down if this executor started it.

The driver's event loop must be asyncio (Ray's ObjectRefs are asyncio awaitables).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskStatus

from asynctrainer.envs.base import AsyncEnv
from asynctrainer.errors import AsyncTrainerError, EnvError
from asynctrainer.runtime.contracts import EnvJob
from asynctrainer.runtime.env_loop import BehaviorLink, EnvLoopStats, run_env_loop, send_trajectories
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.scale import require_ray
from asynctrainer.scale.codec import snapshot_to_payload, trajectory_from_dict
from asynctrainer.scale.worker import BehaviorConfig, EnvWorker, WorkerEnvSource

__all__ = [
    "DEFAULT_BATCH_EXPERIENCES",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_POLICY_LAG",
    "DEFAULT_WORKER_NUM_CPUS",
    "RayEnvExecutor",
    "RayExecutor",
    "executor_of",
    "resolve_worker_env",
]

logger = logging.getLogger("asynctrainer")

# Tunables. ``env_settings`` has no keys for these (yet): the Runner reads these module
# attributes when it starts the executor, so a user sets them before ``runner.run()``.

#: Drop trajectories acted with a policy more than this many versions older than the newest
#: (None: keep all; PPO's ratio corrects small lags). Also ``max_policy_lag`` of :class:`RayExecutor`.
DEFAULT_MAX_POLICY_LAG: int | None = None
#: ``sample`` calls outstanding per worker: 2 overlaps a worker's stepping with the transfer
#: and processing of its previous batch (``strict_on_policy`` uses 1).
DEFAULT_MAX_IN_FLIGHT = 2
#: Experiences per ``sample`` call; None: an update's worth (``update_threshold``) shared by
#: ``2 * num_workers`` calls, within [MIN_BATCH_EXPERIENCES, MAX_BATCH_EXPERIENCES].
DEFAULT_BATCH_EXPERIENCES: int | None = None
MIN_BATCH_EXPERIENCES = 8
MAX_BATCH_EXPERIENCES = 1024
#: CPUs each worker actor reserves in Ray's scheduler (fractions let several share a core).
DEFAULT_WORKER_NUM_CPUS = 1.0
#: Consecutive "temporarily unavailable" answers after which a worker is given up.
MAX_UNAVAILABLE = 50


def executor_of(runner: Any) -> RayEnvExecutor | None:
    """The :class:`RayEnvExecutor` a Runner ran (or runs) with ``executor: ray``, for its counters."""
    executor = getattr(runner, "executor", None)
    return executor.current if isinstance(executor, RayExecutor) else None


def resolve_worker_env(env_source: Any, env_path: str | None) -> WorkerEnvSource:
    """What workers build their envs from: the Runner's factory, else ``env_settings.env_path``.

    An env *object* cannot be copied into workers: pass a (picklable) factory, or an env id
    or ``package.module:factory`` in ``env_settings.env_path`` / ``--env``.

    :raises EnvError: when neither is available.
    """
    if isinstance(env_source, Sequence) and not isinstance(env_source, str) and len(env_source) == 1:
        env_source = env_source[0]  # e.g. the one Unity player factory of the CLI
    if callable(env_source) and not isinstance(env_source, AsyncEnv):
        return env_source  # type: ignore[no-any-return]
    if env_path:
        return env_path
    raise EnvError(
        "executor: ray builds env copies inside the workers, so it needs an env factory (a picklable "
        "callable passed to Runner) or an env id / package.module:factory in env_settings.env_path "
        f"(--env); got an env object ({type(env_source).__name__})."
    )


@dataclass
class WorkerHandle:
    """The driver's view of one worker actor."""

    index: int
    actor: Any
    incarnation: str | None = None
    open_trajectories: int = 0
    batches: int = 0
    restarts: int = 0
    alive: bool = True
    unavailable: int = 0


@dataclass
class _PolicyRef:
    version: int
    ref: Any


@dataclass
class RayEnvExecutor:
    """Runs ``num_workers`` env worker actors and feeds their trajectories to the links' channels.

    :param env_source: what each worker builds its env copies from (:func:`resolve_worker_env`).
    :param batch_experiences: experiences per ``sample`` call (see :data:`DEFAULT_BATCH_EXPERIENCES`).
    :param worker_num_cpus: CPUs each worker actor reserves in Ray's scheduler.
    :param reporters: per env behavior name, a StatsReporter that gets the ``Ray/*`` counters.
    :ivar dropped_trajectories: trajectories in progress on workers that died.
    :ivar stale_trajectories: trajectories dropped for ``max_policy_lag``.
    :ivar lost_batches: ``sample`` calls lost with a dying worker.
    """

    env_source: WorkerEnvSource
    num_workers: int = 1
    envs_per_worker: int = 1
    seed: int = 0
    ray_address: str | None = None
    max_restarts: int = 10
    start_timeout: float = 60.0
    max_policy_lag: int | None = None
    max_in_flight: int = 2
    batch_experiences: int | None = None
    worker_num_cpus: float = 1.0
    reporters: Mapping[str, Any] = field(default_factory=dict)
    stats: EnvLoopStats = field(default_factory=EnvLoopStats)
    workers: list[WorkerHandle] = field(default_factory=list)
    dropped_trajectories: int = 0
    stale_trajectories: int = 0
    lost_batches: int = 0
    worker_restarts: int = 0
    started_ray: bool = False
    _policies: dict[str, _PolicyRef] = field(default_factory=dict)

    # ----- run ---------------------------------------------------------------------------------

    async def run(
        self,
        links: Mapping[str, BehaviorLink],
        *,
        local_env: AsyncEnv | None = None,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start the workers, report readiness, then feed the channels until cancelled.

        :param local_env: the driver's env (used only for its specs); closed once workers run.
        """
        require_ray()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise EnvError(
                "executor: ray needs an asyncio event loop (Ray's object references are asyncio awaitables)."
            ) from None
        try:
            await self._start_workers(links)
            if local_env is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await local_env.aclose()
            task_status.started()
            async with anyio.create_task_group() as tg:
                for key, link in links.items():
                    tg.start_soon(self._broadcast, key, link)
                for worker in self.workers:
                    tg.start_soon(self._feed, worker, links)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                await self._shutdown()

    async def _start_workers(self, links: Mapping[str, BehaviorLink]) -> None:
        import ray
        import ray.exceptions

        if not ray.is_initialized():

            def init() -> None:
                ray.init(address=self.ray_address, include_dashboard=False, logging_level=logging.WARNING)
                self.started_ray = True  # set here: a cancellation after the thread still shuts it down

            # ray.init blocks for seconds: off the loop. Only what we start do we shut down.
            try:
                await anyio.to_thread.run_sync(init)
            except Exception as exc:
                where = f"join the Ray cluster at {self.ray_address!r}" if self.ray_address else "start a local Ray"
                raise EnvError(f"Could not {where} (env_settings.ray_address): {type(exc).__name__}: {exc}") from exc
        elif self.ray_address is not None:
            logger.info("Ray is already initialised in this process; env_settings.ray_address is not used.")
        cpus = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
        if self.num_workers * self.worker_num_cpus > cpus:
            logger.warning(
                "%d Ray env workers × %.2g CPU ask for more than the cluster's %g CPUs: some will wait to be placed.",
                self.num_workers,
                self.worker_num_cpus,
                cpus,
            )
        behaviors = {
            key: BehaviorConfig(link.time_horizon, link.deterministic, link.training).to_dict()
            for key, link in links.items()
        }
        actor_class = ray.remote(EnvWorker).options(  # type: ignore[attr-defined]
            num_cpus=self.worker_num_cpus, max_restarts=self.max_restarts, max_task_retries=0
        )
        seeds = np.random.SeedSequence(self.seed).generate_state(self.num_workers)
        self.workers = [
            WorkerHandle(
                i,
                actor_class.remote(
                    self.env_source,
                    behaviors,
                    worker_index=i,
                    envs_per_worker=self.envs_per_worker,
                    seed=int(seeds[i]),
                ),
            )
            for i in range(self.num_workers)
        ]
        if self.batch_experiences is None:
            thresholds = [link.update_threshold or link.time_horizon for link in links.values()]
            share = min(thresholds) // (2 * self.num_workers)
            self.batch_experiences = max(MIN_BATCH_EXPERIENCES, min(share, MAX_BATCH_EXPERIENCES))
        refs = [w.actor.start.remote(*self._policy_refs(links)) for w in self.workers]
        try:
            with anyio.fail_after(self.start_timeout):
                infos = [await self._await(ref, w) for ref, w in zip(refs, self.workers, strict=True)]
        except ray.exceptions.RayActorError as exc:
            # Usually the worker could not unpickle or build what it was given (a factory it cannot import).
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise EnvError(
                f"A Ray env worker could not be started: {lines[-1] if lines else type(exc).__name__}. "
                "Worker processes must be able to import the env factory (install the package that defines it, "
                "or give Ray a runtime_env)."
            ) from exc
        except TimeoutError:
            raise EnvError(
                f"The Ray env workers did not start within {self.start_timeout:g} s (env_settings.timeout_wait). "
                f"The cluster has {cpus:g} CPUs and each of the {self.num_workers} workers asks for "
                f"{self.worker_num_cpus:g}; building the env may also be slow or hang."
            ) from None
        for worker, info in zip(self.workers, infos, strict=True):
            worker.incarnation = info["incarnation"]
            if sorted(info["behaviors"]) != sorted(links):
                raise EnvError(
                    f"Ray env worker {worker.index} runs behaviors {info['behaviors']}, "
                    f"but the driver's env has {sorted(links)}."
                )
        logger.info(
            "Ray executor: %d workers × %d env copies, %d experiences per batch.",
            self.num_workers,
            self.envs_per_worker,
            self.batch_experiences,
        )

    async def _await(self, ref: Any, worker: WorkerHandle) -> Any:
        """Await a worker's ObjectRef; an error raised inside the worker surfaces as EnvError."""
        import ray.exceptions

        try:
            return await ref
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, AsyncTrainerError):
                raise EnvError(f"Ray env worker {worker.index}: {cause}") from exc
            raise EnvError(f"Ray env worker {worker.index} failed: {type(cause).__name__}: {cause}") from exc

    # ----- policies ----------------------------------------------------------------------------

    def _policy_ref(self, key: str, link: BehaviorLink) -> Any:
        """The object-store reference of the link's newest snapshot (one ``ray.put`` per version)."""
        import ray

        held = self._policies.get(key)
        snapshot = link.slot.latest()
        if held is None or held.version != snapshot.version:
            message = {"behavior": key, "snapshot": snapshot_to_payload(snapshot)}
            held = self._policies[key] = _PolicyRef(snapshot.version, ray.put(message))
        return held.ref

    def _policy_refs(self, links: Mapping[str, BehaviorLink]) -> list[Any]:
        return [self._policy_ref(key, link) for key, link in links.items()]

    async def _broadcast(self, key: str, link: BehaviorLink) -> None:
        """Send each new snapshot to every live worker as soon as it is published."""
        import ray.exceptions

        version = link.slot.version
        while True:
            snapshot = await link.slot.wait_newer(version)
            version = snapshot.version
            ref = self._policy_ref(key, link)
            calls = [w.actor.set_policy.remote(ref) for w in self.workers if w.alive]
            # Wait for the answers (so errors of dead workers are retrieved, not logged as
            # unhandled), but never long: a restarting worker gets the policy with its next call.
            with anyio.move_on_after(5):
                for call in calls:
                    with contextlib.suppress(ray.exceptions.RayError):
                        await call

    # ----- feeding -----------------------------------------------------------------------------

    async def _feed(self, worker: WorkerHandle, links: Mapping[str, BehaviorLink]) -> None:
        """Keep ``max_in_flight`` sample calls outstanding on one worker and deliver their batches."""
        import ray.exceptions

        strict = any(link.strict_on_policy for link in links.values())
        depth = 1 if strict else max(1, self.max_in_flight)
        assert self.batch_experiences is not None
        max_steps = self.batch_experiences + max(link.time_horizon for link in links.values())
        inflight: deque[Any] = deque()
        while worker.alive:
            while len(inflight) < depth:
                inflight.append(
                    worker.actor.sample.remote(self.batch_experiences, max_steps, *self._policy_refs(links))
                )
            ref = inflight.popleft()
            try:
                batch = await self._await(ref, worker)
            except ray.exceptions.ActorUnavailableError:
                # Dying or restarting: what it was doing is lost; Ray brings it back.
                self._lose(worker)
                worker.unavailable += 1
                if worker.unavailable >= MAX_UNAVAILABLE:
                    self._give_up(worker, "it stayed unavailable")
                else:
                    await anyio.sleep(min(1.0, 0.05 * worker.unavailable))
                continue
            except ray.exceptions.RayActorError:
                # ActorDiedError: out of restarts (or killed for good).
                self._lose(worker)
                self._give_up(worker, "it died and has no restarts left")
                return
            worker.unavailable = 0
            await self._deliver(worker, batch, links)

    def _lose(self, worker: WorkerHandle) -> None:
        self.lost_batches += 1
        self.dropped_trajectories += worker.open_trajectories
        worker.open_trajectories = 0
        self._report()

    def _give_up(self, worker: WorkerHandle, why: str) -> None:
        worker.alive = False
        alive = sum(w.alive for w in self.workers)
        logger.warning("Ray env worker %d is given up (%s); %d workers remain.", worker.index, why, alive)
        if not alive:
            raise EnvError(f"Every Ray env worker failed (the last because {why}); see the Ray logs.")

    async def _deliver(self, worker: WorkerHandle, batch: Mapping[str, Any], links: Mapping[str, BehaviorLink]) -> None:
        if worker.incarnation is not None and batch["incarnation"] != worker.incarnation:
            # A restarted worker: whatever the previous one had in progress is gone.
            self.worker_restarts += 1
            worker.restarts += 1
            self.dropped_trajectories += worker.open_trajectories
        worker.incarnation = batch["incarnation"]
        worker.open_trajectories = int(batch["open_trajectories"])
        worker.batches += 1
        self.stats.env_steps += int(batch["env_steps"])
        self.stats.decisions += int(batch["decisions"])
        groups: dict[str, list[Trajectory]] = {}
        for data in batch["trajectories"]:
            trajectory = trajectory_from_dict(data)
            groups.setdefault(trajectory.behavior_name, []).append(trajectory)
        for key, trajectories in groups.items():
            link = links[key]
            if self.max_policy_lag is not None:
                newest = link.slot.version
                fresh = [t for t in trajectories if newest - t.oldest_version <= self.max_policy_lag]
                self.stale_trajectories += len(trajectories) - len(fresh)
                trajectories = fresh
            # The local env loop's sending and lag bounding, so trainers see no difference.
            await send_trajectories(link, trajectories, self.stats)
        self._report()

    def _report(self) -> None:
        for reporter in self.reporters.values():
            reporter.set_stat("Ray/Dropped Trajectories", float(self.dropped_trajectories))
            reporter.set_stat("Ray/Stale Trajectories", float(self.stale_trajectories))
            reporter.set_stat("Ray/Worker Restarts", float(self.worker_restarts))

    # ----- stop --------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Close the workers' envs (briefly), kill the actors, and shut Ray down if we started it."""
        if not self.workers and not self.started_ray:
            return
        import ray

        closing = [worker.actor.close.remote() for worker in self.workers if worker.alive]
        with anyio.move_on_after(2):
            for call in closing:
                with contextlib.suppress(Exception):
                    await call
        for worker in self.workers:
            with contextlib.suppress(Exception):
                ray.kill(worker.actor, no_restart=True)
        if self.started_ray:
            await anyio.to_thread.run_sync(ray.shutdown)
            self.started_ray = False


class RayExecutor:
    """The Runner's executor for ``env_settings.executor: ray`` (see the module docstring).

    Workers build their envs from the Runner's env when it is a factory, else from
    ``env_settings.env_path``; the driver's env (used for specs) is closed once they run.
    ``--inference`` has nothing to learn from workers: it runs the local env loop.

    :param max_policy_lag: defaults to :data:`DEFAULT_MAX_POLICY_LAG` (read when the run starts).
    :ivar current: the :class:`RayEnvExecutor` of the run in progress (or the last one), for its counters.
    """

    def __init__(self, *, max_policy_lag: int | None = None) -> None:
        self.max_policy_lag = max_policy_lag
        self.current: RayEnvExecutor | None = None

    async def run(self, job: EnvJob, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """:raises SettingsError: when Ray is not installed (naming the ``ray`` extra).
        :raises EnvError: when workers cannot be built, fail, or all die.
        """
        require_ray()
        if not all(link.training for link in job.links.values()):
            logger.info("executor: ray is for training; inference runs the env loop in this process.")
            await run_env_loop(job.env, job.links, rng=job.rng, stats=job.stats, task_status=task_status)
            return
        es = job.env_settings
        self.current = RayEnvExecutor(
            resolve_worker_env(job.env_source, es.env_path),
            num_workers=int(es.num_workers),
            envs_per_worker=int(es.envs_per_worker),
            seed=int(job.rng.integers(0, 2**31)),
            ray_address=es.ray_address,
            max_restarts=int(es.max_lifetime_restarts),
            start_timeout=float(es.timeout_wait),
            max_policy_lag=DEFAULT_MAX_POLICY_LAG if self.max_policy_lag is None else self.max_policy_lag,
            max_in_flight=DEFAULT_MAX_IN_FLIGHT,
            batch_experiences=DEFAULT_BATCH_EXPERIENCES,
            worker_num_cpus=DEFAULT_WORKER_NUM_CPUS,
            reporters=dict(job.reporters),
            stats=job.stats,
        )
        await self.current.run(job.links, local_env=job.env, task_status=task_status)
