"""The trainer contract of ML-Agents, as coroutines.

``Trainer`` is the abstract base; ``RLTrainer`` adds step accounting, summaries,
checkpoint requests and the loop-side processing of trajectories. An algorithm subclass
implements the synchronous, thread-side parts: building its networks, ``_update_policy``
and ``_make_snapshot``. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import CheckpointLoadError, CheckpointSaveError, UpdateError, UsageError
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.runtime.scheduling import lower_tf_threads
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.stats import StatsReporter
from asynctrainer.runtime.timers import hierarchical_timer
from asynctrainer.runtime.trajectory import Trajectory

logger = logging.getLogger("asynctrainer")

__all__ = ["MAX_CHECKPOINT_COUNT", "RLTrainer", "Trainer", "TrainerCompanion", "checkpoint_int"]

PolicyT = TypeVar("PolicyT")
R = TypeVar("R")

#: The largest step or count a checkpoint may hold: 2**53, beyond which a float64 (stats, the
#: status file's JSON readers) no longer counts one by one. No run gets near it.
MAX_CHECKPOINT_COUNT = 2**53


def checkpoint_int(
    state: Mapping[str, np.ndarray], key: str, behavior: str, *, low: int = 0, high: int = MAX_CHECKPOINT_COUNT
) -> int:
    """The one integer stored as ``state[key]`` (an array of one element).

    :raises CheckpointLoadError: naming ``key`` when it is missing, empty, not an integer or
        outside ``[low, high]``.
    """
    value = state.get(key)
    if value is None or value.shape != (1,) or value.dtype.kind not in "iu":
        shown = "missing" if value is None else f"{value.dtype} of shape {value.shape}"
        raise CheckpointLoadError(
            f"Behavior '{behavior}': field '{key}' is {shown}; one integer (shape (1,)) is allowed."
        )
    number = int(value[0])
    if not low <= number <= high:
        raise CheckpointLoadError(
            f"Behavior '{behavior}': field '{key}' is {number}; an integer from {low} to {high} is allowed."
        )
    return number


class TrainerCompanion(Protocol):
    """Loop-side state that belongs with a trainer's checkpoints (self-play's snapshot window)."""

    def state(self) -> dict[str, np.ndarray]:
        """The state as named arrays, read on the loop."""
        ...

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back what :meth:`state` returned (empty for a checkpoint without it); may run in a worker thread.

        :raises CheckpointLoadError: naming what does not fit.
        """
        ...


class Trainer(abc.ABC, Generic[PolicyT]):
    """One behavior's learner.

    :param trainer_settings: the behavior's settings (``asynctrainer.settings.TrainerSettings``).
    :param training: False for ``--inference``: no updates.
    :param artifact_path: where this behavior's files go (``results/<run>/<behavior>``), or None.
    """

    def __init__(
        self,
        behavior_name: str,
        trainer_settings: Any,
        *,
        training: bool = True,
        load: bool = False,
        artifact_path: str | None = None,
        reward_buff_cap: int = 100,
        stats_reporter: StatsReporter | None = None,
    ) -> None:
        self.behavior_name = behavior_name
        self.brain_name = behavior_name
        self.trainer_settings = trainer_settings
        self.is_training = training
        self.load = load
        self.artifact_path = artifact_path
        self._stats_reporter = stats_reporter or StatsReporter(behavior_name)
        self._reward_buffer: deque[float] = deque(maxlen=reward_buff_cap)
        #: Called on the loop after each trajectory is accounted for (the Runner's curriculum check).
        self.trajectory_listener: Callable[[RLTrainer[Any]], None] | None = None
        self.policy_queues: list[PolicySlot] = []
        self.trajectory_queues: list[MemoryObjectReceiveStream[Trajectory]] = []
        self.policies: dict[str, PolicyT] = {}
        self._step = 0
        self.summary_freq: int = trainer_settings.summary_freq
        #: One update in flight per trainer; several trainers update in parallel.
        self._limiter = anyio.CapacityLimiter(1)

    async def run_exclusive(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` in a worker thread between two updates (under the trainer's limiter).

        What touches the trainer's thread-side state from outside (a checkpoint's capture, a
        restore) goes through here, so it never overlaps an update.
        """
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @property
    def stats_reporter(self) -> StatsReporter:
        return self._stats_reporter

    @property
    def parameters(self) -> Any:
        return self.trainer_settings

    @property
    def step(self) -> int:
        return self._step

    @property
    def get_step(self) -> int:
        return self._step

    @property
    def get_max_steps(self) -> int:
        return int(self.trainer_settings.max_steps)

    @property
    def should_still_train(self) -> bool:
        """ML-Agents' rule, ``<=`` included: training stops once the step passes max_steps."""
        return self.is_training and self._step <= self.get_max_steps

    @property
    def reward_buffer(self) -> deque[float]:
        """Returns of recent episodes, newest first."""
        return self._reward_buffer

    def keep_returns(self, count: int) -> None:
        """Keep at least the ``count`` newest episode returns in :attr:`reward_buffer`."""
        if self._reward_buffer.maxlen is not None and self._reward_buffer.maxlen < count:
            self._reward_buffer = deque(self._reward_buffer, maxlen=count)

    def publish_policy_queue(self, policy_queue: PolicySlot) -> None:
        self.policy_queues.append(policy_queue)

    def subscribe_trajectory_queue(self, trajectory_queue: MemoryObjectReceiveStream[Trajectory]) -> None:
        if self.trajectory_queues:
            raise UsageError(
                f"Trainer '{self.behavior_name}' already reads a trajectory channel; clone the "
                "channel's send end to feed it from several env loops."
            )
        self.trajectory_queues.append(trajectory_queue)

    def get_policy(self, behavior_id: str) -> PolicyT:
        return self.policies[behavior_id]

    @abc.abstractmethod
    def create_policy(self, behavior_id: str, behavior_spec: BehaviorSpec) -> PolicyT:
        """Build the policy (networks). Called in a worker thread."""

    @abc.abstractmethod
    def add_policy(self, behavior_id: str, policy: PolicyT) -> None: ...

    @abc.abstractmethod
    async def advance(self) -> None: ...

    @abc.abstractmethod
    def end_episode(self) -> None: ...

    @abc.abstractmethod
    async def save_model(self) -> None: ...

    @abc.abstractmethod
    async def export_model(self) -> None: ...


class RLTrainer(Trainer[PolicyT]):
    """Step accounting, summaries and trajectory intake shared by PPO and SAC.

    Subclasses implement, all called in the update thread under the trainer's limiter:
    ``create_policy``, ``_update_policy() -> dict[str, float]`` (the update, returning stats)
    and ``_make_snapshot(version) -> PolicySnapshot``; and on the loop ``_is_ready_update``
    and ``_store_trajectory``.
    """

    def __init__(self, behavior_name: str, trainer_settings: Any, **kwargs: Any) -> None:
        super().__init__(behavior_name, trainer_settings, **kwargs)
        self._next_summary_step = 0
        self._next_save_step = 0
        self.version = 0
        self.input_closed = False
        self.update_count = 0
        #: Called with the step whenever a checkpoint is due (set by the checkpoint manager).
        self.checkpoint_requester: Callable[[RLTrainer[Any], int], None] | None = None
        self._episodes = 0
        #: Set when an update failed: its weights may be broken, so no checkpoint is taken after it.
        self.update_failed = False
        #: Saved and restored with the trainer, each under ``<prefix>/`` (e.g. ``selfplay``).
        self.companions: dict[str, TrainerCompanion] = {}
        self._warned_group_reward = False

    #: Whether the trainer learns from groups as groups (POCA); the others are told once when
    #: their agents get group rewards (which they take as part of the extrinsic reward).
    multi_agent = False

    # ----- loop side -----------------------------------------------------------------------

    def add_policy(self, behavior_id: str, policy: PolicyT) -> None:
        self.policies[behavior_id] = policy
        self._next_summary_step = self._next_threshold(self.summary_freq)
        self._next_save_step = self._next_threshold(self.trainer_settings.checkpoint_interval)

    def _next_threshold(self, interval: int) -> int:
        return self._step + (interval - self._step % interval)

    @property
    def episodes(self) -> int:
        return self._episodes

    def _increment_step(self, n_steps: int) -> None:
        self._step += n_steps
        self._next_summary_step = self._next_threshold(self.summary_freq)
        self._next_save_step = self._next_threshold(self.trainer_settings.checkpoint_interval)

    def _maybe_write_summary(self, step_after: int) -> None:
        if step_after >= self._next_summary_step and self._step != 0:
            self.stats_reporter.set_stat("Is Training", float(self.should_still_train))
            self.stats_reporter.write_stats(self._next_summary_step)

    def _maybe_save_model(self, step_after: int) -> None:
        if step_after >= self._next_save_step and self._step != 0 and self.checkpoint_requester is not None:
            self.checkpoint_requester(self, self._step)

    def _process_trajectory(self, trajectory: Trajectory) -> None:
        """Account for one trajectory: summaries, checkpoints, steps, episode stats, policy lag."""
        n = len(trajectory)
        self._maybe_write_summary(self._step + n)
        self._maybe_save_model(self._step + n)
        self._increment_step(n)
        group = trajectory.group
        if not (self.multi_agent or self._warned_group_reward) and group is not None and group.rewards.any():
            self._warned_group_reward = True
            logger.warning(
                "Behavior '%s': an agent received a group reward, but %s is not a multi-agent trainer; "
                "use trainer_type: poca for best results.",
                self.behavior_name,
                type(self).__name__,
            )
        reporter = self.stats_reporter
        reporter.add_stat("Policy/Entropy", float(trajectory.entropies.mean()))
        reporter.add_stat("Policy/Lag", float(self.version - trajectory.oldest_version))
        if trajectory.episode_return is not None:
            self._episodes += 1
            self._reward_buffer.appendleft(trajectory.episode_return)
            reporter.add_stat("Environment/Cumulative Reward", trajectory.episode_return)
            reporter.add_stat("Environment/Episode Length", float(trajectory.episode_length or 0))
        if self.should_still_train:
            self._store_trajectory(trajectory)
        if self.trajectory_listener is not None:
            self.trajectory_listener(self)

    def _accept(self, trajectory: Trajectory) -> bool:
        """Process one trajectory; True when an update is due now."""
        with hierarchical_timer("process_trajectory"):
            self._process_trajectory(trajectory)
        return self.should_still_train and self._is_ready_update()

    async def advance(self) -> None:
        """Await one trajectory, take what else is ready without waiting, and update when due.

        Readiness is checked after every trajectory, so which trajectories make up an update
        depends only on their order, never on timing. Returns without waiting further once
        the channel is closed (``input_closed`` becomes True). Cancelled while an update runs,
        it waits for the update thread, discards the result and re-raises the cancellation.
        """
        receive = self.trajectory_queues[0]
        try:
            first = await receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self.input_closed = True
            return
        with hierarchical_timer("trainer_advance"):
            if self._accept(first):
                await self._update()
                return
            while True:
                try:
                    item = receive.receive_nowait()
                except anyio.WouldBlock:
                    return
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    self.input_closed = True
                    return
                if self._accept(item):
                    await self._update()
                    return
                if not self.should_still_train:
                    return

    def _non_finite_update(self) -> UpdateError:
        """The error for an update whose loss or gradient came out NaN or infinite (raise it in the update).

        Its weights are neither published nor saved: the previous snapshot keeps serving and
        the last checkpoint stays the last good one.
        """
        cause = FloatingPointError(
            "a loss or gradient is NaN or infinite (e.g. a reward too large for float32, or a learning rate too "
            "high); the new weights are not published or saved"
        )
        return UpdateError(self.behavior_name, self._step, cause)

    def _update_and_snapshot(self) -> tuple[dict[str, float], PolicySnapshot]:
        """The update and the new snapshot; TensorFlow's threads run at background priority."""
        with hierarchical_timer("_update_policy"):
            stats = self._update_policy()
        snapshot = self._make_snapshot(self.version + 1)
        lower_tf_threads()
        return stats, snapshot

    async def _update(self) -> None:
        """Run one update in the worker thread, then publish the new snapshot on the loop.

        :raises UpdateError: with behavior and step, the original error as ``__cause__``.
        """
        step = self._step
        try:
            stats, snapshot = await anyio.to_thread.run_sync(self._update_and_snapshot, limiter=self._limiter)
        except UpdateError:
            self.update_failed = True
            raise
        except Exception as exc:
            self.update_failed = True
            raise UpdateError(self.behavior_name, step, exc) from exc
        # Cancelled while the thread ran: the thread was waited for, its result is discarded.
        await anyio.lowlevel.checkpoint_if_cancelled()
        self.version = snapshot.version
        self.update_count += 1
        for key, value in stats.items():
            self.stats_reporter.add_stat(key, value)
        for slot in self.policy_queues:
            slot.publish(snapshot)

    async def initial_snapshot(self) -> PolicySnapshot:
        """Build the snapshot of the current weights in the worker thread and publish it."""
        snapshot = await anyio.to_thread.run_sync(self._make_snapshot, self.version, limiter=self._limiter)
        for slot in self.policy_queues:
            slot.publish(snapshot)
        return snapshot

    def end_episode(self) -> None:
        """Nothing to reset: episode bookkeeping lives in the env loop's AgentProcessor."""

    async def save_model(self) -> None:
        """Request a checkpoint (handled by the checkpoint manager when one is attached)."""
        if self.checkpoint_requester is not None:
            self.checkpoint_requester(self, self._step)

    async def export_model(self) -> None:
        """Export hook; algorithms with an exporter override it."""

    @property
    def update_threshold(self) -> int | None:
        """Experiences after which an update is due (for ``strict_on_policy``); None if not fixed."""
        return None

    @property
    def lag_bound(self) -> int | None:
        """Experiences an env loop may send past the newest snapshot before waiting for the next.

        Default: two updates' worth, so acting overlaps one update but never runs further
        ahead, however fast the env. None: unbounded (only the channel's capacity limits it).
        """
        return None if self.update_threshold is None else 2 * self.update_threshold

    @property
    def warmup_steps(self) -> int | None:
        """Experiences the env loop may send on top of ``lag_bound`` before the first new policy
        arrives: 0 by default (an on-policy trainer's first update comes within the bound); None
        for no bound before it (an off-policy trainer, whose replay buffer takes stale
        experience as well as fresh)."""
        return 0

    # ----- checkpoint state ---------------------------------------------------------------------

    def _loop_state(self) -> dict[str, np.ndarray]:
        """The bookkeeping the loop owns, as ``trainer/*`` arrays, and the companions' (read on the loop)."""
        state = {
            "trainer/step": np.array([self._step], np.int64),
            "trainer/version": np.array([self.version], np.int64),
            "trainer/update_count": np.array([self.update_count], np.int64),
            "trainer/episodes": np.array([self._episodes], np.int64),
            "trainer/reward_buffer": np.array(list(self._reward_buffer), np.float64),
        }
        for prefix, companion in self.companions.items():
            state.update({f"{prefix}/{key}": value for key, value in companion.state().items()})
        return state

    def _thread_state(self, loop_state: Mapping[str, np.ndarray], queued: object) -> dict[str, np.ndarray]:
        """``loop_state`` with the algorithm's state (``algo/*``) added (worker thread, under the limiter)."""
        algo = {**self._algorithm_state(), **self._queued_state(queued)}
        return {**{f"algo/{k}": v for k, v in algo.items()}, **loop_state}

    async def checkpoint_state(self) -> tuple[dict[str, np.ndarray], PolicySnapshot]:
        """State and snapshot for a checkpoint, both as of one moment.

        The trainer's limiter is taken on the loop, so no update runs; then, with no await in
        between, what the loop owns (step, episodes, reward buffer, experiences it queued) is
        read, and :meth:`capture` reads the rest in the worker thread. The loop goes on
        meanwhile; what it changes after that moment goes into the next checkpoint.

        :raises CheckpointSaveError: after a failed update, whose weights are not to be saved.
        """
        async with self._limiter:
            if self.update_failed:
                raise CheckpointSaveError(
                    f"Behavior '{self.behavior_name}' is not saved: its update failed, so the last checkpoint "
                    "is the last good one."
                )
            loop_state, queued = self._loop_state(), self._queued_on_loop()
            return await anyio.to_thread.run_sync(self.capture, loop_state, queued)

    def capture(
        self, loop_state: Mapping[str, np.ndarray], queued: object = None
    ) -> tuple[dict[str, np.ndarray], PolicySnapshot]:
        """The thread side of :meth:`checkpoint_state` (worker thread, while the caller holds the limiter)."""
        state = self._thread_state(loop_state, queued)
        version, step = int(loop_state["trainer/version"][0]), int(loop_state["trainer/step"][0])
        return state, dataclasses.replace(self._make_snapshot(version), step=step)

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume, as named numpy arrays (no pickle), while nothing else runs.

        Keys: ``trainer/*`` for the shared bookkeeping, ``algo/*`` from :meth:`_algorithm_state`
        and :meth:`_queued_state`. A checkpoint of a running trainer uses :meth:`checkpoint_state`.
        """
        return self._thread_state(self._loop_state(), self._queued_on_loop())

    def set_state(self, state: Mapping[str, np.ndarray], *, weights_only: bool = False) -> None:
        """Restore from :meth:`get_state`; ``weights_only`` (``--initialize-from``) keeps step 0.

        :raises CheckpointLoadError: naming the field that is missing or out of range.
        """
        trainer = None
        if not weights_only:
            name = self.behavior_name
            trainer = {
                key: checkpoint_int(state, f"trainer/{key}", name)
                for key in ("step", "version", "update_count", "episodes")
            }
            rewards = state.get("trainer/reward_buffer")
            numbers = rewards is not None and rewards.ndim == 1 and rewards.dtype.kind in "fiu"
            if rewards is None or not numbers or not np.isfinite(rewards).all():
                raise CheckpointLoadError(
                    f"Behavior '{name}': field 'trainer/reward_buffer' is missing or not a list of finite numbers."
                )
        algo = {k[len("algo/") :]: v for k, v in state.items() if k.startswith("algo/")}
        self._restore_algorithm_state(algo, weights_only=weights_only)
        if trainer is None:
            return
        for prefix, companion in self.companions.items():
            mark = prefix + "/"
            companion.restore({k[len(mark) :]: v for k, v in state.items() if k.startswith(mark)})
        self._step = trainer["step"]
        self.version = trainer["version"]
        self.update_count = trainer["update_count"]
        self._episodes = trainer["episodes"]
        self._reward_buffer.clear()
        self._reward_buffer.extend(float(r) for r in state["trainer/reward_buffer"])
        self._next_summary_step = self._next_threshold(self.summary_freq)
        self._next_save_step = self._next_threshold(self.trainer_settings.checkpoint_interval)

    def _algorithm_state(self) -> dict[str, np.ndarray]:
        """Weights, optimizer slots, normalisers, RNG and schedules of the algorithm (override; worker thread)."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")

    def _restore_algorithm_state(self, state: Mapping[str, np.ndarray], *, weights_only: bool) -> None:
        """Inverse of :meth:`_algorithm_state`; with ``weights_only`` restore network weights only."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")

    def _queued_on_loop(self) -> object:
        """What the loop queued for the update thread that a checkpoint keeps (e.g. SAC's
        transitions), copied on the loop; passed to :meth:`_queued_state`. None by default."""
        return None

    def _queued_state(self, queued: object) -> dict[str, np.ndarray]:
        """The arrays of what :meth:`_queued_on_loop` returned (worker thread); none by default."""
        return {}

    # ----- thread side (override) ------------------------------------------------------------

    @abc.abstractmethod
    def _is_ready_update(self) -> bool: ...

    @abc.abstractmethod
    def _store_trajectory(self, trajectory: Trajectory) -> None: ...

    @abc.abstractmethod
    def _update_policy(self) -> dict[str, float]: ...

    @abc.abstractmethod
    def _make_snapshot(self, version: int) -> PolicySnapshot: ...
