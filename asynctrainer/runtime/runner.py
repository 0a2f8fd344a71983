"""The Runner: one task group with env loops, trainer loops, checkpoints and the stats writer.

It knows trainers, checkpoints and executors only through the protocols of
``runtime/contracts.py``; ``asynctrainer.app.Runner`` is this class wired with the defaults.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskGroup, TaskStatus

from asynctrainer.envs.base import AsyncEnv
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import (
    AsyncTrainerError,
    EnvError,
    SettingsError,
    SpecError,
    UnsupportedFeatureError,
    raise_single_error,
)
from asynctrainer.files import atomic_write_text
from asynctrainer.runtime.channels import Overflow, TrajectorySender, open_trajectory_channel
from asynctrainer.runtime.contracts import (
    CheckpointBackend,
    Checkpointer,
    EnvExecutor,
    EnvJob,
    RestoreRequest,
    TrainerContext,
    TrainerFactory,
)
from asynctrainer.runtime.curriculum import EnvironmentParameters
from asynctrainer.runtime.env_loop import BehaviorLink, EnvLoopStats, EnvResets
from asynctrainer.runtime.local_executor import LocalExecutor
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.runtime.scheduling import (
    SHORT_SWITCH_INTERVAL,
    check_switch_interval,
    gil_switch_interval,
    learner_priority,
    tf_determinism,
    tf_threads,
)
from asynctrainer.runtime.self_play import Ghost, SelfPlayController
from asynctrainer.runtime.stats import ConsoleWriter, StatsReporter, StatsSummaryRecord, StatsWriter
from asynctrainer.runtime.timers import TimerTree, hierarchical_timer
from asynctrainer.runtime.trainer import RLTrainer
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.settings import RunSettings, TrainerSettings, run_id_problem, split_behavior_id

__all__ = ["RunResult", "Runner"]

logger = logging.getLogger("asynctrainer")

#: Trajectories that may wait for a trainer; the env loop also bounds lag in steps (env_loop.py).
DEFAULT_CHANNEL_CAPACITY = 64

EnvSource = AsyncEnv | Callable[[], AsyncEnv] | Callable[[], Awaitable[AsyncEnv]]


@dataclass
class RunResult:
    """What a finished run did, per behavior."""

    steps: dict[str, int]
    episodes: dict[str, int]
    updates: dict[str, int]
    mean_reward: dict[str, float]
    env_steps: int
    paths: list[Path] = field(default_factory=list)
    stopped_early: bool = False


def _network_deterministic(trainer_settings: TrainerSettings) -> bool:
    """``network_settings.deterministic``: act with the distribution's mode, while training too (as ML-Agents)."""
    return trainer_settings.network_settings.deterministic


def _resolve_seed(seed: int | None) -> int:
    if seed is None or seed < 0:
        return int(np.random.default_rng().integers(0, 10000))
    return seed


class Runner:
    """Trains every behavior of one env on the caller's event loop.

    :param settings: the run config (``asynctrainer.settings.RunSettings``).
    :param env: an :class:`AsyncEnv`, or a callable (sync or async) returning one; or a list of
        them, stepped side by side, one env loop each (e.g. ``--num-envs`` Unity players). Their
        behaviors and specs must be the same.
    :param results_dir: where ``<run_id>/`` goes; None writes no files.
    :param env_id: the env's id, used to name a single-behavior env.
    :param trainer_factory: builds one trainer per behavior (``asynctrainer.Runner`` defaults
        it to PPO/SAC by ``trainer_type``).
    :param checkpoint_backend: saves and restores trainers; None: no checkpoints, no restore.
    :param executor: steps the env; None: the local env loop in this process.
    :param warm_up: called once in a worker thread before set-up (e.g. to import what the run
        will import lazily: an import on the loop thread would stop the loop for its duration).
    :param resume: restore every trainer from its newest checkpoint in ``<results_dir>/<run_id>``.
    :param initialize_from: a run directory whose newest checkpoints give the initial weights (step 0).
    :param checkpointing: save checkpoints (periodic and final) when there is a run directory.
    :param freeze_gc: ``gc.freeze()`` after set-up and after the first update, so the cyclic
        garbage collector stops rescanning TensorFlow's long-lived objects (a process-wide
        setting; pass False to leave the collector alone).
    :param switch_interval: the GIL switch interval (seconds) while the run lasts, restored after
        (``runtime/scheduling.py``; 50 µs by default): a short one bounds how long the loop waits
        for the GIL while other threads run Python. While trainers are built and checkpoints
        written it is 50 µs at most. A process-wide setting; None leaves it alone.

    ``await runner.run()`` trains until every trainer reached ``max_steps`` or ``stop()`` is
    called, and returns a :class:`RunResult`. ``async with Runner(...) as runner`` runs it in
    the background of the host's loop; leaving the block stops it cleanly.
    Cancelling ``run()`` stops promptly: an update thread in flight is waited for and its
    result discarded.
    """

    def __init__(
        self,
        settings: RunSettings,
        env: EnvSource | Sequence[EnvSource],
        *,
        results_dir: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        env_id: str | None = None,
        seed: int | None = None,
        trainer_factory: TrainerFactory,
        checkpoint_backend: CheckpointBackend | None = None,
        executor: EnvExecutor | None = None,
        warm_up: Callable[[], None] | None = None,
        training: bool = True,
        stats_writers: list[StatsWriter] | None = None,
        channel_capacity: int | None = None,
        overflow: Overflow = "block",
        deterministic: bool = False,
        resume: bool = False,
        initialize_from: str | os.PathLike[str] | None = None,
        checkpointing: bool = True,
        final_save_timeout: float = 60.0,
        freeze_gc: bool = True,
        switch_interval: float | None = SHORT_SWITCH_INTERVAL,
    ) -> None:
        self.settings = settings
        self.resume = resume
        self.initialize_from = initialize_from
        self.checkpointing = checkpointing
        self.final_save_timeout = final_save_timeout
        self.freeze_gc = freeze_gc
        check_switch_interval(switch_interval)
        # A bad process-wide variable fails here, not when TensorFlow is first used or in the first update.
        learner_priority()
        tf_threads()
        tf_determinism()
        self.switch_interval = switch_interval
        #: While trainers are built and checkpoints written (see SHORT_SWITCH_INTERVAL); None: left alone.
        self._short_interval = None if switch_interval is None else min(switch_interval, SHORT_SWITCH_INTERVAL)
        self.checkpoints: Checkpointer | None = None
        self._checkpoint_backend = checkpoint_backend
        self.executor: EnvExecutor = executor or LocalExecutor()
        self._warm_up = warm_up
        self._env_source = env
        self.run_id = settings.checkpoint_settings.run_id if run_id is None else run_id
        problem = run_id_problem(self.run_id)
        if problem is not None:  # the settings' run id was checked when they were built; an argument was not
            raise SettingsError(f"Runner(run_id=...): {problem}", key_path="run_id")
        self.run_dir = None if results_dir is None else Path(results_dir) / self.run_id
        self.env_id = env_id
        self.seed = _resolve_seed(seed if seed is not None else settings.env_settings.seed)
        self._trainer_factory = trainer_factory
        self.training = training
        self._writers: list[StatsWriter] = stats_writers if stats_writers is not None else [ConsoleWriter()]
        self._channel_capacity = channel_capacity
        self._overflow = overflow
        self.deterministic = deterministic
        self.trainers: dict[str, RLTrainer[Any]] = {}
        self.slots: dict[str, PolicySlot] = {}
        #: The self-play of each behavior that has ``self_play`` (``runtime/self_play.py``).
        self.ghosts: dict[str, Ghost] = {}
        #: Requests for a full reset of every env: self-play's team changes, lessons with ``require_reset``.
        self.env_resets = EnvResets()
        self.env_stats = EnvLoopStats()
        self.timers = TimerTree("asynctrainer")
        self._stop = anyio.Event()
        self._stopped_early = False
        self._paths: list[Path] = []
        self._tg: TaskGroup | None = None
        self._result: RunResult | None = None
        self._done = anyio.Event()
        self._started = anyio.Event()
        #: The ``environment_parameters`` and the current lesson of each curriculum.
        self.environment_parameters = EnvironmentParameters(settings.environment_parameters, self.seed)
        self._envs: list[AsyncEnv] = []

    def __repr__(self) -> str:
        state = "done" if self._done.is_set() else "running" if self._started.is_set() else "not started"
        behaviors = sorted(self.trainers) or sorted(self.settings.behaviors)
        return f"asynctrainer.Runner(run_id={self.run_id!r}, behaviors={behaviors}, training={self.training}, {state})"

    # ----- public API -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a clean stop: env loops end, trainers stop, the final save runs."""
        self._stopped_early = True
        self._stop.set()

    async def run(self) -> RunResult:
        """Train until done or stopped.

        :raises UpdateError: when an update fails (behavior and step attached).
        :raises AsyncTrainerError: for bad settings or env errors.
        """
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._guarded_main)
        except BaseExceptionGroup as group:
            raise_single_error(group)
            raise
        assert self._result is not None
        return self._result

    async def __aenter__(self) -> Runner:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(self._start_in_background)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self.stop()
        assert self._tg is not None
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            raise_single_error(group)
            raise

    async def wait_started(self) -> None:
        """Wait until the run is set up and its env loop runs (or until it ended, set-up failures included)."""
        await self._started.wait()

    async def wait(self) -> RunResult:
        """Wait for a run started with ``async with`` to finish, and return its result."""
        await self._done.wait()
        assert self._result is not None
        return self._result

    @property
    def result(self) -> RunResult | None:
        return self._result

    # ----- internals -------------------------------------------------------------------------

    async def _start_in_background(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._guarded_main)
        await self._started.wait()
        task_status.started()

    async def _guarded_main(self) -> None:
        try:
            with gil_switch_interval(self.switch_interval):
                await self._main()
        finally:
            self._started.set()
            self._done.set()

    async def _make_envs(self) -> list[AsyncEnv]:
        """Every env of the run, made side by side (players launch in parallel); all closed if one fails."""
        sources = self._env_source if isinstance(self._env_source, Sequence) else [self._env_source]
        if not sources:
            raise EnvError("The Runner was given an empty list of envs.")
        made: list[AsyncEnv | None] = [None] * len(sources)

        async def make(i: int) -> None:
            made[i] = await self._make_env(sources[i])

        try:
            async with anyio.create_task_group() as tg:
                for i in range(len(sources)):
                    tg.start_soon(make, i)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                for env in made:
                    if env is not None:
                        await env.aclose()
            raise
        envs = [env for env in made if env is not None]
        first = dict(envs[0].behavior_specs)
        for i, env in enumerate(envs[1:], start=1):
            if dict(env.behavior_specs) != first:
                for e in envs:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                        await e.aclose()
                raise SpecError(
                    f"The envs of this run differ: env 0 has behaviors {sorted(first)}, env {i} has "
                    f"{sorted(env.behavior_specs)} (or their specs differ). Every env of a run must be the same game."
                )
        return envs

    @staticmethod
    async def _make_env(source: EnvSource) -> AsyncEnv:
        if isinstance(source, AsyncEnv):
            return source
        try:
            made = source()
            env = await made if isinstance(made, Awaitable) else made
        except AsyncTrainerError:
            raise
        except Exception as exc:
            raise EnvError(f"Could not create the env: {type(exc).__name__}: {exc}") from exc
        if not isinstance(env, AsyncEnv):
            raise EnvError(f"The env factory returned {type(env).__name__}, which is not an AsyncEnv.")
        return env

    def _resolve_behaviors(self, specs: Mapping[str, BehaviorSpec]) -> dict[str, tuple[str, TrainerSettings]]:
        """Map env behavior names to (trainer name, trainer settings): see RunSettings.resolve_behavior_name.

        The teams of one name (Unity's ``Name?team=N``) share its trainer, through self-play.
        """
        out: dict[str, tuple[str, TrainerSettings]] = {}
        teams: dict[str, str] = {}
        for env_name in specs:
            name, _team = split_behavior_id(env_name)  # Unity's Name?team=N: one trainer per name
            if len(specs) == 1:
                name = self.settings.resolve_behavior_name(name, self.env_id)
            settings = self.settings.trainer_settings_for(name)
            if name in teams:
                if settings.self_play is None:
                    raise SettingsError(
                        f"The env has behavior '{name}' in several teams ('{teams[name]}' and '{env_name}'): "
                        f"add a self_play section to behaviors.{name} to train its teams against each other.",
                        key_path=f"behaviors.{name}.self_play",
                    )
                if specs[env_name] != specs[teams[name]]:
                    raise SpecError(
                        f"The teams '{teams[name]}' and '{env_name}' of behavior '{name}' have different "
                        "observation or action specs; the teams of one name share one policy, so they must match."
                    )
            teams[name] = env_name
            out[env_name] = (name, settings)
        if any(ts.self_play is not None for _, ts in out.values()) and not isinstance(self.executor, LocalExecutor):
            raise UnsupportedFeatureError(
                f"self_play is not supported yet with env_settings.executor {type(self.executor).__name__}: "
                "its opponents' policies reach envs of the local executor only.",
                key_path="env_settings.executor",
            )
        return out

    async def _main(self) -> None:
        self.timers.activate()
        if self._warm_up is not None:
            await anyio.to_thread.run_sync(self._warm_up)
        send_records, receive_records = anyio.create_memory_object_stream[StatsSummaryRecord](math.inf)
        envs = await self._make_envs()
        env = envs[0]
        writes = self.run_dir is not None and self.training
        if writes and self.checkpointing and self._checkpoint_backend is not None:
            assert self.run_dir is not None
            self.checkpoints = self._checkpoint_backend.open(
                self.run_dir, resume=self.resume, switch_interval=self._short_interval
            )
        trained = False
        try:
            seeds = np.random.SeedSequence(self.seed)
            behaviors = self._resolve_behaviors(env.behavior_specs)
            self._check_curricula([name for name, _ in behaviors.values()])
            links: dict[str, BehaviorLink] = {}
            children = seeds.spawn(len(behaviors) + 1)
            controller = SelfPlayController(self.env_resets)
            trainer_links: dict[str, BehaviorLink] = {}
            # Building a trainer traces its TensorFlow functions: see SHORT_SWITCH_INTERVAL.
            with gil_switch_interval(self._short_interval):
                for i, (env_name, (name, ts)) in enumerate(behaviors.items()):
                    seed = int(children[i].generate_state(1)[0])
                    if name not in self.trainers:
                        spec = env.behavior_specs[env_name]
                        trainer_links[name] = await self._setup_behavior(name, ts, spec, seed, send_records, controller)
                    ghost = self.ghosts.get(name)
                    team = split_behavior_id(env_name)[1]
                    links[env_name] = (
                        trainer_links[name] if ghost is None else ghost.team_link(team, env_name, trainer_links[name])
                    )
            for name, ghost in self.ghosts.items():
                ghost.start(self.slots[name], trainer_links[name].send)
            self._start_curricula(envs)
            if writes:
                await anyio.to_thread.run_sync(self._write_configuration)
            trained = writes  # from here on, timers.json is written however the run ends
            rng = np.random.default_rng(children[-1])
            # The stats writer outlives the training group: once the last record is sent it writes
            # what is queued and closes the writers (their files complete) before the run returns.
            async with anyio.create_task_group() as stats:
                stats.start_soon(self._write_stats_forever, receive_records)
                async with anyio.create_task_group() as outer:
                    if self.checkpoints is not None:
                        await outer.start(self.checkpoints.run)
                    clean = False
                    try:
                        await self._train(envs, links, rng)
                        clean = True
                    except anyio.get_cancelled_exc_class():
                        # Cancelled from outside: still save. Not when a task of this group
                        # (the checkpoint manager) failed and cancelled it: that error is raised alone.
                        clean = not outer.cancel_scope.cancel_called
                        raise
                    finally:
                        if clean and self.checkpoints is not None:
                            with anyio.CancelScope(shield=True), anyio.move_on_after(self.final_save_timeout):
                                self._paths += await self.checkpoints.final_save()
                        send_records.close()
                        outer.cancel_scope.cancel()
        except BaseException:
            send_records.close()  # a failure during set-up comes before the stats writer owns them
            receive_records.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                for each in envs:
                    await each.aclose()
                if trained:
                    with contextlib.suppress(OSError):  # the error being raised matters more
                        await anyio.to_thread.run_sync(self._write_timers)
            raise
        self._result = self._collect_result()
        if writes:
            await anyio.to_thread.run_sync(self._write_timers)

    def _check_curricula(self, behaviors: list[str]) -> None:
        """Before anything is built: the criteria name trained behaviors, and lessons can reach the envs."""
        params = self.environment_parameters
        params.check_behaviors(behaviors)
        lessons_change = any(len(lessons) > 1 for lessons in params.curricula.values())
        if lessons_change and not isinstance(self.executor, LocalExecutor):
            raise UnsupportedFeatureError(
                "environment_parameters: curriculum lessons are not supported yet with env_settings.executor "
                f"{type(self.executor).__name__}: lessons reach envs of the local executor only.",
                key_path="environment_parameters",
            )

    def _start_curricula(self, envs: list[AsyncEnv]) -> None:
        """Send the parameters' values to the envs and watch the trainers' episodes for lesson changes."""
        params = self.environment_parameters
        if not params:
            return
        if self.resume and self.checkpoints is not None:
            params.restore(self.checkpoints.saved_lessons())
        if self.checkpoints is not None:
            self.checkpoints.record_lessons(params.lessons)
        self._envs = list(envs)
        self._deliver_parameters()
        for trainer in self.trainers.values():
            trainer.keep_returns(params.window(trainer.behavior_name))
            trainer.trajectory_listener = self._after_trajectory

    def _deliver_parameters(self) -> None:
        values = self.environment_parameters.values()
        for env in self._envs:
            setter = getattr(env, "set_environment_parameters", None)
            if callable(setter):
                setter(values)
            else:
                logger.warning(
                    "environment_parameters: the env %s takes no environment parameters "
                    "(it has no set_environment_parameters method); they do not reach it.",
                    type(env).__name__,
                )

    def _after_trajectory(self, trainer: RLTrainer[Any]) -> None:
        """The curriculum check after each trajectory (ML-Agents checks after each env step)."""
        params = self.environment_parameters
        progress = {name: t.step / max(1, t.get_max_steps) for name, t in self.trainers.items()}
        returns = {name: list(t.reward_buffer) for name, t in self.trainers.items()}
        advanced, reset = params.update(progress, returns)
        if advanced:
            for t in self.trainers.values():
                t.reward_buffer.clear()
            self._deliver_parameters()
            if reset:  # require_reset: every env starts over in the new lesson (open trajectories dropped)
                self.env_resets.requested += 1
            if self.checkpoints is not None:
                self.checkpoints.record_lessons(params.lessons)
        for name, number in params.lessons.items():
            trainer.stats_reporter.set_stat(f"Environment/Lesson Number/{name}", float(number))

    async def _setup_behavior(
        self,
        name: str,
        trainer_settings: TrainerSettings,
        spec: BehaviorSpec,
        seed: int,
        sink: Any,
        controller: SelfPlayController,
    ) -> BehaviorLink:
        """Build, restore and connect one trainer; with ``self_play``, its ghost too (restored with it)."""
        reporter = StatsReporter(name, sink.send_nowait)
        artifact = None if self.run_dir is None else self.run_dir / name
        context = TrainerContext(seed=seed, artifact_path=artifact, training=self.training, stats_reporter=reporter)
        trainer = self._trainer_factory(name, trainer_settings, spec, context)
        policy = await anyio.to_thread.run_sync(trainer.create_policy, name, spec)
        trainer.add_policy(name, policy)
        if trainer_settings.self_play is not None:
            ghost = Ghost(trainer, trainer_settings.self_play, controller, np.random.default_rng(seed))
            trainer.companions["selfplay"] = ghost
            self.ghosts[name] = ghost
        await self._restore(trainer, trainer_settings)
        if self.checkpoints is not None:
            self.checkpoints.attach(trainer)
        slot = PolicySlot(name)
        trainer.publish_policy_queue(slot)
        capacity = self._channel_capacity or DEFAULT_CHANNEL_CAPACITY
        send_t: TrajectorySender[Trajectory]
        send_t, receive = open_trajectory_channel(capacity, self._overflow)
        trainer.subscribe_trajectory_queue(receive)
        await trainer.initial_snapshot()
        self.trainers[name] = trainer
        self.slots[name] = slot
        return BehaviorLink(
            name=name,
            spec=spec,
            slot=slot,
            send=send_t,
            time_horizon=int(trainer_settings.time_horizon),
            strict_on_policy=bool(getattr(trainer_settings, "strict_on_policy", False)),
            update_threshold=trainer.update_threshold,
            lag_bound=trainer.lag_bound,
            warmup_steps=trainer.warmup_steps,
            deterministic=self.deterministic or _network_deterministic(trainer_settings),
            training=self.training,
            resets=self.env_resets,
        )

    async def _restore(self, trainer: RLTrainer[Any], trainer_settings: TrainerSettings) -> None:
        """``--resume``: everything from the newest checkpoint; ``--initialize-from``/``init_path``: weights only."""
        if self._checkpoint_backend is None:
            return
        init_path = getattr(trainer_settings, "init_path", None)
        request = RestoreRequest(
            run_dir=self.run_dir,
            resume=self.resume or not self.training,
            initialize_from=None if self.initialize_from is None else Path(self.initialize_from),
            init_path=Path(init_path) if init_path else None,
        )
        await self._checkpoint_backend.restore(trainer, request)

    async def _train(self, envs: list[AsyncEnv], links: dict[str, BehaviorLink], rng: np.random.Generator) -> None:
        all_done = anyio.Event()
        remaining = {name for name, t in self.trainers.items() if t.should_still_train}
        if not remaining and self.training:
            all_done.set()

        links_by_trainer = {link.name: link for link in links.values()}

        async def advance_loop(trainer: RLTrainer[Any]) -> None:
            frozen_after_first_update = False
            while trainer.should_still_train and not trainer.input_closed:
                await trainer.advance()
                if self.freeze_gc and not frozen_after_first_update and trainer.update_count >= 1:
                    gc.freeze()  # once more, after the first update traced its functions
                    frozen_after_first_update = True
            # This behavior is done: its env loop stops feeding it and never waits for it again,
            # so the other behaviors of a shared env keep training.
            ghost = self.ghosts.get(trainer.behavior_name)
            if ghost is None:
                links_by_trainer[trainer.behavior_name].training = False
            else:  # its teams play on as the other teams' opponents
                ghost.retire()
            self.slots[trainer.behavior_name].close()
            remaining.discard(trainer.behavior_name)
            if not remaining:
                all_done.set()

        async def stop_watch() -> None:
            await self._stop.wait()
            all_done.set()

        async def inference_watch() -> None:
            # --inference: play until stopped or until max_steps env steps were taken.
            limit = max(t.get_max_steps for t in self.trainers.values())
            while self.env_stats.env_steps < limit:
                await anyio.sleep(0.05)
            all_done.set()

        if self.freeze_gc:
            # TensorFlow and the networks leave about a million long-lived objects; a full
            # collection walking them paused the loop for 0.3–0.8 s (benchmarks/loop_lag.py).
            # Frozen objects are never scanned again.
            gc.freeze()
        try:
            async with anyio.create_task_group() as tg:
                if self.training:
                    for trainer in self.trainers.values():
                        if trainer.should_still_train:
                            tg.start_soon(advance_loop, trainer)
                tg.start_soon(stop_watch)
                for ghost in self.ghosts.values():
                    tg.start_soon(ghost.run)
                if not self.training:
                    tg.start_soon(inference_watch)
                await tg.start(self._env_loop, envs, links, rng)
                self._started.set()
                await all_done.wait()
                tg.cancel_scope.cancel()
        finally:
            for link in links.values():
                link.send.close()
            for ghost in self.ghosts.values():
                ghost.close()
            for trainer in self.trainers.values():
                for queue in trainer.trajectory_queues:
                    queue.close()

    async def _env_loop(
        self,
        envs: list[AsyncEnv],
        links: dict[str, BehaviorLink],
        rng: np.random.Generator,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        reporters = {key: self.trainers[link.name].stats_reporter for key, link in links.items()}
        job = EnvJob(
            envs=envs,
            links=links,
            rng=rng,
            env_source=self._env_source,
            env_settings=self.settings.env_settings,
            stats=self.env_stats,
            reporters=reporters,
        )
        await self.executor.run(job, task_status=task_status)
        # The executor returned: the env stopped on its side (e.g. Stop in the Unity Editor). The
        # run ends as if asked to, with its final save; the last trajectories were sent.
        logger.info("The env stopped; saving and ending the run.")
        self.stop()

    async def _write_stats_forever(self, receive: Any) -> None:
        limiter = anyio.CapacityLimiter(1)
        try:
            async with receive:
                async for record in receive:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self._write_record, record, limiter=limiter)
        finally:  # also when the run is cancelled: the writers' files are completed
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close_writers, limiter=limiter)

    def _write_record(self, record: StatsSummaryRecord) -> None:
        with hierarchical_timer("write_stats"):
            for writer in self._writers:
                try:
                    writer.write_stats(record)
                except Exception:  # a broken writer must not stop training
                    logger.exception("Stats writer %s failed", type(writer).__name__)

    def _close_writers(self) -> None:
        for writer in self._writers:
            writer.close()

    def _collect_result(self) -> RunResult:
        mean_reward: dict[str, float] = {}
        for name, t in self.trainers.items():
            rewards = list(t.reward_buffer)
            mean_reward[name] = float(np.mean(rewards)) if rewards else math.nan
        return RunResult(
            steps={n: t.step for n, t in self.trainers.items()},
            episodes={n: t.episodes for n, t in self.trainers.items()},
            updates={n: t.update_count for n, t in self.trainers.items()},
            mean_reward=mean_reward,
            env_steps=self.env_stats.env_steps,
            paths=list(self._paths),
            stopped_early=self._stopped_early,
        )

    def _write_configuration(self) -> None:
        import yaml

        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "configuration.yaml"
        data = self.settings.to_yaml_dict()
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
        self._paths.append(path)

    def _write_timers(self) -> None:
        assert self.run_dir is not None
        path = self.run_dir / "run_logs" / "timers.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.timers.metadata.update(run_id=self.run_id, seed=str(self.seed))
        atomic_write_text(path, json.dumps(self.timers.to_dict(), indent=2))
        self._paths.append(path)
