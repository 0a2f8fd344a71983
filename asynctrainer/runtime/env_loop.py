"""One env loop: step the env, act with the newest snapshot, feed trajectories to trainers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import numpy as np
import numpy.typing as npt
from anyio.abc import TaskStatus

from asynctrainer.envs.base import AsyncEnv
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, DecisionSteps
from asynctrainer.errors import EnvStoppedError, SpecError
from asynctrainer.runtime.agent_processor import AgentProcessor
from asynctrainer.runtime.channels import TrajectorySink
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.stats import StatsReporter
from asynctrainer.runtime.timers import hierarchical_timer
from asynctrainer.runtime.trajectory import Trajectory

__all__ = ["BehaviorLink", "EnvLoopStats", "EnvResets", "act_for", "allowed_mask", "run_env_loop", "send_trajectories"]


@dataclass
class EnvResets:
    """Requests for a full reset of every env (self-play's team change, a lesson with ``require_reset``);
    each env loop resets once per request."""

    requested: int = 0


@dataclass
class BehaviorLink:
    """What an env loop needs to serve one behavior.

    :ivar update_threshold: experiences after which the trainer updates; with
        ``strict_on_policy`` the loop waits for the new snapshot once that many were sent.
    """

    name: str
    spec: BehaviorSpec
    slot: PolicySlot
    send: TrajectorySink[Trajectory]
    time_horizon: int
    strict_on_policy: bool = False
    update_threshold: int | None = None
    #: Experiences the loop may send past the last snapshot before it waits for a new one.
    lag_bound: int | None = None
    #: Experiences allowed on top of ``lag_bound`` before the first new policy (the trainer's
    #: warm-up); None: no bound before it.
    warmup_steps: int | None = 0
    deterministic: bool = False
    training: bool = True
    #: The run's requests for a full reset of the envs (self-play, curricula), shared by its links.
    resets: EnvResets | None = None
    _since_update: int = 0
    _since_publish: int = 0
    _version_seen: int = -1

    def pace(self, *, strict_on_policy: bool, lag_bound: int | None, since_update: int | None = None) -> None:
        """New pacing for what this link sends from now on (self-play: its team starts or stops learning).

        The lag count starts again; ``since_update`` is what the trainer's buffer already holds
        (the strict on-policy count, carried over from the team that learned before).
        """
        self.strict_on_policy = strict_on_policy
        self.lag_bound = lag_bound
        self._since_publish = 0
        if since_update is not None:
            self._since_update = since_update

    @property
    def since_update(self) -> int:
        """Experiences sent since the trainer's last update, as the strict on-policy count has it."""
        return self._since_update


@dataclass
class EnvLoopStats:
    env_steps: int = 0
    decisions: int = 0
    trajectories: int = 0
    lag_waits: int = 0


def allowed_mask(decision: DecisionSteps) -> npt.NDArray[np.float32] | None:
    """ML-Agents' masks say True = forbidden; the policy takes 1 = allowed."""
    if decision.action_mask is None:
        return None
    return (~np.asarray(decision.action_mask, dtype=bool)).astype(np.float32)


def act_for(
    decision: DecisionSteps,
    processor: AgentProcessor,
    snapshot: PolicySnapshot,
    *,
    deterministic: bool,
    training: bool,
    rng: np.random.Generator,
) -> ActionBatch:
    """Choose the actions of ``decision``'s agents with ``snapshot``, and record them for learning.

    The acting half of one env step, shared by the local env loop and the Ray workers; the other
    half is ``processor.add_steps`` on what the step returned.
    """
    masks = allowed_mask(decision)
    memories = processor.memories(decision.agent_id, snapshot.memory_size) if snapshot.memory_size else None
    acted = snapshot.act(decision.obs, masks, deterministic=deterministic, rng=rng, memories=memories)
    if acted.memories is not None:
        processor.remember(decision.agent_id, acted.memories)
    if training:
        processor.record_actions(decision, acted, snapshot.version, masks, memories)
    return ActionBatch(acted.continuous, acted.discrete, decision.agent_id)


async def run_env_loop(
    env: AsyncEnv,
    links: Mapping[str, BehaviorLink],
    *,
    rng: np.random.Generator,
    worker_id: int = 0,
    stats: EnvLoopStats | None = None,
    reporters: Mapping[str, StatsReporter] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Drive ``env`` until cancelled, or until it stops on its side. Reports readiness after the first reset.

    Cancellation may land while waiting on the env, on a full channel or for a snapshot;
    trajectories already sent stay sent, and the env is closed (shielded) on the way out. An
    env raising :class:`EnvStoppedError` ends every open trajectory as interrupted; they are
    sent and the loop returns. The stats a step reports go to ``reporters`` (by behavior).
    A reset requested through a link's :class:`EnvResets` resets the env before its next step;
    the open trajectories are dropped then (they were acted by policies no longer in place).
    """
    stats = stats if stats is not None else EnvLoopStats()

    def new_processors() -> dict[str, AgentProcessor]:
        return {
            name: AgentProcessor(name, link.spec, time_horizon=link.time_horizon, worker_id=worker_id)
            for name, link in links.items()
        }

    processors = new_processors()
    requests = list({id(link.resets): link.resets for link in links.values() if link.resets is not None}.values())
    resets_seen = sum(r.requested for r in requests)
    try:
        with hierarchical_timer("env_reset"):
            steps = await env.reset()
        task_status.started()
        while True:
            actions: dict[str, ActionBatch] = {}
            for name, batch in steps.items():
                link = links.get(name)
                if link is None:
                    raise SpecError(
                        f"The env reported behavior '{name}', which it did not declare; known: {sorted(links)}."
                    )
                if batch.stats and reporters is not None and name in reporters:
                    for stat in batch.stats:
                        reporters[name].record(stat.key, stat.value, stat.aggregation)
                processor = processors[name]
                await send_trajectories(link, processor.add_steps(batch.decision, batch.terminal), stats)
                if len(batch.decision):
                    # The newest snapshot now: sending may have waited for a new one.
                    snapshot = link.slot.latest()
                    actions[name] = act_for(
                        batch.decision,
                        processor,
                        snapshot,
                        deterministic=link.deterministic,
                        training=link.training,
                        rng=rng,
                    )
                    stats.decisions += len(batch.decision)
            if requests and sum(r.requested for r in requests) != resets_seen:
                resets_seen = sum(r.requested for r in requests)
                processors = new_processors()
                with hierarchical_timer("env_reset"):
                    steps = await env.reset()
                continue
            try:
                with hierarchical_timer("env_step"):
                    steps = await env.step(actions)
            except EnvStoppedError:
                await _end_open_trajectories(links, processors, stats)
                return
            stats.env_steps += 1
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await env.aclose()


async def _end_open_trajectories(
    links: Mapping[str, BehaviorLink], processors: Mapping[str, AgentProcessor], stats: EnvLoopStats
) -> None:
    """The env is gone: every agent's open trajectory ends as interrupted and is sent (nothing is lost)."""
    for name, processor in processors.items():
        ended = [processor.end_agent(aid) for aid in processor.agent_ids]
        await send_trajectories(links[name], [t for t in ended if t is not None], stats, hold_back=False)


async def send_trajectories(
    link: BehaviorLink, trajectories: list[Trajectory], stats: EnvLoopStats, *, hold_back: bool = True
) -> None:
    """Send what was cut, then hold acting back if it ran too far ahead of learning.

    With ``strict_on_policy`` the loop waits for the new snapshot as soon as the trainer's
    buffer is full. Otherwise it may run one more buffer ahead while the update runs, and
    waits only when it has sent two buffers' worth of experience since the last snapshot:
    acting overlaps updates, but the policy lag stays bounded by about one update however
    fast the env is. Before the first new policy the bound grows by the trainer's warm-up
    (``warmup_steps``; None, an off-policy trainer's: no bound until then). A ``drop_oldest``
    channel (a live server that must never wait) skips the bound: there, stale experience is
    dropped instead. ``hold_back=False`` sends without
    waiting for a snapshot (the last trajectories of an env that stopped).
    """
    if not link.training:
        # Nothing is sent when playing (--inference): still yield, or an env whose step never
        # awaits (SimpleEnvironment) would hold the loop forever and nothing could stop it.
        await anyio.lowlevel.checkpoint()
        return
    version = link.slot.version
    if version != link._version_seen:
        link._version_seen = version
        link._since_publish = 0
    crossed = False
    for trajectory in trajectories:
        await link.send.send(trajectory)
        stats.trajectories += 1
        link._since_publish += len(trajectory)
        if link.strict_on_policy and link.update_threshold is not None:
            # Mirror the trainer's readiness count: it updates right after the trajectory
            # that takes its buffer to the threshold, and starts counting again from zero.
            link._since_update += len(trajectory)
            if link._since_update >= link.update_threshold:
                link._since_update = 0
                crossed = True
    # The lag bound never applies to a live server's drop_oldest channel. Before the first new
    # policy it grows by the trainer's warm-up (None: off-policy, no bound); without a bound
    # then, a fast env would fill the channel with the initial policy's experience while the
    # first update (and its tracing) runs, and an on-policy trainer would learn from stale data.
    bound = link.lag_bound if link.send.overflow == "block" else None
    if bound is not None and version == 0:
        bound = None if link.warmup_steps is None else bound + link.warmup_steps
    if hold_back and (crossed or (bound is not None and link._since_publish >= bound)):
        stats.lag_waits += 1
        await link.slot.wait_newer(version)
