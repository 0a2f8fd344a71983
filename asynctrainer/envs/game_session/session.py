"""GameSession: an :class:`AsyncEnv` fed by a host program's ``decide()`` calls.

A game or simulation server that already runs an asyncio loop asks for actions agent by agent
(or tick by tick), and a :class:`~asynctrainer.runtime.runner.Runner` trains on the same loop::

    session = GameSession({"Walker": spec}, max_wait_ms=1.0)
    async with Runner(settings, session) as runner:
        ...
        action = await session.decide(agent_id, obs, reward=r)        # in the host's code
        ...
        session.leave(agent_id)                                         # on disconnect

How it works. ``decide()`` validates its input and queues it; the Runner's env loop, which
calls :meth:`GameSession.reset` once and then :meth:`GameSession.step` forever, collects what
is queued into one ``DecisionSteps`` (and ``TerminalSteps``) per behavior, acts on the whole
batch with the newest policy snapshot, and hands the actions back through ``step(actions)``,
which resolves the waiting ``decide()`` calls. One env-loop step is one micro-batch. A batch
is closed as soon as one of these holds:

- ``max_batch`` decisions are queued;
- every agent that has joined (and not left) has a decision queued — nobody else to wait for,
  which is what a server that ticks all its agents at once gets on every tick;
- ``max_wait_ms`` passed since the oldest queued item arrived.

Episode ends: ``decide(..., terminated=True)`` (or ``truncated=True``) reports the agent's
final observation and reward; it returns ``None`` at once (no action is due), and the agent's
next ``decide()`` starts its next episode. ``leave(agent_id)`` (call it on a disconnect) ends
the agent's episode as interrupted: a ``TerminalSteps`` row with ``interrupted=True`` and the
agent's last observation, so the learner bootstraps from it.

Agent ids are ints, unique across the session; an agent keeps the behavior of its first
``decide()`` until it leaves. Everything runs on the caller's asyncio loop; nothing here
blocks, and nothing here imports TensorFlow.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import asynctrainer.envs.game_session.validation as check
from asynctrainer.envs.game_session.batcher import MicroBatcher
from asynctrainer.envs.game_session.entries import (
    DONE,
    QUEUED,
    Agent,
    AgentAction,
    Batch,
    Entry,
    Leave,
    Single,
    entry_obs,
)
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, StepBatch
from asynctrainer.errors import EnvError, SpecError

if TYPE_CHECKING:
    from asynctrainer.demos.recorder import DemoRecorder

__all__ = ["AgentAction", "GameSession", "SessionStats"]


@dataclass
class SessionStats:
    """Counters of what went through a session (or a :class:`~asynctrainer.serving.PolicyServer`).

    :ivar steps: batches handed to the env loop by ``step()`` (its env steps).
    :ivar decisions: agent decisions acted on (rows of all ``DecisionSteps`` handed out).
    :ivar batches: ``DecisionSteps`` batches handed out that had at least one decision.
    :ivar episodes_ended: terminated or truncated episodes reported by the host.
    :ivar leaves: agents that left while in an episode (interrupted trajectories).
    :ivar largest_batch: the most decisions handed out in one step.
    :ivar failed_batches: batches answered with an error instead of actions
        (:meth:`GameSession.fail_decisions`: a policy that could not act on them).
    """

    steps: int = 0
    decisions: int = 0
    batches: int = 0
    episodes_ended: int = 0
    leaves: int = 0
    largest_batch: int = 0
    failed_batches: int = 0


class GameSession:
    """An :class:`~asynctrainer.envs.base.AsyncEnv` whose agents are driven by the host's ``decide()`` calls.

    :param behavior_specs: behavior name → :class:`BehaviorSpec`, one entry per kind of agent.
    :param max_batch: the most decisions in one batch (one forward pass, one env-loop step).
        A ``decide_batch()`` call is never split, so a batch may exceed this by one call.
    :param max_wait_ms: the longest a queued decision waits for others to join its batch. The
        default favours latency; raise it when many agents decide at slightly different times.
    """

    def __init__(
        self,
        behavior_specs: Mapping[str, BehaviorSpec],
        *,
        max_batch: int = 1024,
        max_wait_ms: float = 1.0,
    ) -> None:
        if not behavior_specs:
            raise SpecError("GameSession needs at least one behavior: give {name: BehaviorSpec}.")
        for name, spec in behavior_specs.items():
            if not isinstance(spec, BehaviorSpec):
                raise SpecError(f"GameSession: behavior '{name}' maps to {type(spec).__name__}, not a BehaviorSpec.")
        if max_batch < 1:
            raise SpecError(f"GameSession: max_batch must be >= 1, got {max_batch}.")
        if not max_wait_ms >= 0:
            raise SpecError(f"GameSession: max_wait_ms must be >= 0, got {max_wait_ms}.")
        self._specs: dict[str, BehaviorSpec] = dict(behavior_specs)
        self._only = next(iter(self._specs)) if len(self._specs) == 1 else None
        self.stats = SessionStats()
        self._agents: dict[int, Agent] = {}
        self._batcher = MicroBatcher(
            self._specs, self._agents, max_batch=int(max_batch), max_wait=float(max_wait_ms) / 1000.0
        )
        self._close_reason: str | None = None
        self._carry: dict[int, float] = {}  # rewards of dropped decisions, by agent
        self._recorders: dict[str, list[DemoRecorder]] = {}
        self._collected: dict[str, StepBatch] = {}  # the batch in flight, while recording
        self._players: dict[int, tuple[str, tuple[Any, ...]]] = {}  # player-driven agents: behavior, last obs
        self._parameters: dict[str, Any] = {}
        self._parameters_changed: asyncio.Event | None = None
        self._group_of: dict[int, int] = {}  # agent → its multi-agent group (set_group)
        self._group_due: dict[int, float] = {}  # agent → group reward not yet reported with one of its rows

    # ----- the host's side ----------------------------------------------------------------------

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    @property
    def max_batch(self) -> int:
        return self._batcher.max_batch

    @property
    def environment_parameters(self) -> Mapping[str, Any]:
        """The run's ``environment_parameters`` in their current lessons: a float, or a sampler
        ``{sampler_type, sampler_parameters}`` (with its ``seed``) for the host to draw from."""
        return dict(self._parameters)

    async def environment_parameters_changed(self) -> Mapping[str, Any]:
        """Wait until the parameters change (a curriculum's lesson advanced) and return the new ones."""
        if self._parameters_changed is None:
            self._parameters_changed = asyncio.Event()
        await self._parameters_changed.wait()
        return self.environment_parameters

    def set_environment_parameters(self, values: Mapping[str, Any]) -> None:
        """The Runner calls this (on the loop) with each lesson's values; wakes the waiting hosts."""
        self._parameters = dict(values)
        changed, self._parameters_changed = self._parameters_changed, None
        if changed is not None:
            changed.set()

    @property
    def max_wait(self) -> float:
        """``max_wait_ms`` in seconds."""
        return self._batcher.max_wait

    @property
    def closed(self) -> bool:
        return self._batcher.closed

    @property
    def agent_ids(self) -> list[int]:
        """Agents that joined (called ``decide``) and did not leave."""
        return list(self._agents)

    @property
    def pending(self) -> int:
        """Decisions queued and not yet handed to the env loop."""
        return self._batcher.queued

    def check_open(self) -> None:
        """:raises EnvError: the session is closed (saying why), so no call can be served."""
        if self._batcher.closed:
            why = self._close_reason or "its Runner stopped, or aclose() was called"
            raise EnvError(
                f"This GameSession is closed ({why}); create a new one, "
                "or serve the trained policy with asynctrainer.PolicyServer."
            )

    async def decide(
        self,
        agent_id: int | np.integer[Any],
        obs: Any,
        reward: float = 0.0,
        terminated: bool | np.bool_ = False,
        truncated: bool | np.bool_ = False,
        *,
        behavior: str | None = None,
        action_mask: Any = None,
        action: Any = None,
    ) -> AgentAction | None:
        """Report one agent's observation (and the reward since its last action); return its action.

        :param agent_id: an int that fits int64, unique across the session.
        :param obs: the observation (array-like of the spec's shape) when the behavior has one
            observation spec, else a sequence with one array-like per observation spec. Any
            bool/int/float dtype is cast to float32.
        :param reward: the reward the agent received since its previous decision (finite as a float32).
        :param terminated: the episode ended for real (the learner bootstraps with 0).
        :param truncated: the episode was cut short, e.g. by a time limit (interrupted: the
            learner bootstraps from ``obs``). ``terminated`` wins when both are set.
        :param behavior: the agent's behavior; may be omitted when the session has only one.
        :param action_mask: for discrete actions, booleans ``[sum(branches)]`` where True
            forbids an action (ML-Agents' convention), or None.
        :param action: the action a player chose (an :class:`AgentAction` or ``(continuous,
            discrete)``), instead of asking the policy: it is recorded by :meth:`record` and
            returned at once, and not trained on. The agent is then player-driven until its
            episode ends or it leaves (its terminal ``decide()`` needs no action).
        :returns: the agent's :class:`AgentAction`, or ``None`` when no action is due: the call
            ended the episode, or the agent left while waiting.
        :raises SpecError: bad input (named by agent and behavior), or this agent already has
            a decision pending; the call then changes nothing. A pending ``decide()`` whose
            caller was cancelled (say, by a timeout) does not count: still queued, it is dropped
            and its reward carried over to this call; already with the env loop, it is acted on
            and its action discarded.
        :raises EnvError: the session is (or gets) closed.
        """
        if action is not None or (
            self._players and isinstance(agent_id, (int, np.integer)) and int(agent_id) in self._players
        ):
            return self._player_decision(agent_id, obs, reward, terminated, truncated, behavior, action_mask, action)
        entry = self._submit_single(agent_id, obs, reward, terminated, truncated, behavior, action_mask)
        if entry.future is None:
            return None
        return await entry.future

    async def decide_batch(
        self,
        behavior: str | None,
        agent_ids: Any,
        obs: Any,
        rewards: Any = None,
        terminated: Any = None,
        truncated: Any = None,
        *,
        action_mask: Any = None,
    ) -> ActionBatch:
        """Report a tick of several agents of one behavior at once; return their actions.

        :param agent_ids: ints ``[n]`` that fit int64, distinct.
        :param obs: one array ``[n, *shape]`` when the behavior has one observation spec, else
            a sequence with one such array per spec.
        :param rewards: floats ``[n]`` (default 0); ``terminated`` / ``truncated``: bools ``[n]``.
        :param action_mask: booleans ``[n, sum(branches)]``, True = forbidden, or None.
        :returns: an :class:`ActionBatch` aligned with ``agent_ids``. Rows whose episode ended
            in this call, and rows of agents that left while waiting, hold zeros.
        :raises SpecError: bad input; the call is all or nothing and then changes nothing.
        """
        entry = self._submit_batch(behavior, agent_ids, obs, rewards, terminated, truncated, action_mask)
        return await entry.future

    def leave(self, agent_id: int | np.integer[Any], obs: Any = None, reward: float = 0.0) -> bool:
        """The agent left (e.g. its client disconnected): end its episode as interrupted.

        The learner gets a ``TerminalSteps`` row with ``interrupted=True`` and the agent's
        newest observation, so it bootstraps from that observation's value. When the host
        knows the outcome of the agent's last action, it passes it as ``obs`` and ``reward``
        (used only when no decision of the agent is queued: a queued observation is the
        outcome already). A ``decide()`` of this agent still waiting returns ``None``; a row of
        a ``decide_batch()`` still waiting gets zeros. Unknown agents are ignored: leaving
        twice is harmless.

        :returns: True when the agent was known.
        """
        agent_id = check.check_agent_id(agent_id)
        if agent_id in self._players:
            return self._player_leaves(agent_id, obs, reward)
        info = self._agents.get(agent_id)
        if info is None:
            self._group_of.pop(agent_id, None)
            return False
        name = info.behavior
        final = None if obs is None else check.single_obs(self._specs[name], name, agent_id, obs)
        final_reward = _add_reward(check.check_reward(name, agent_id, reward), self._carry.get(agent_id, 0.0))
        # Every check passed: from here on the call changes state and raises nothing.
        self._carry.pop(agent_id, None)
        self._group_of.pop(agent_id, None)  # its last group reward still goes with its final row
        del self._agents[agent_id]
        entry = info.waiting
        if entry is not None:
            if isinstance(entry, Single):
                entry.left = True
                if entry.future is not None and not entry.future.done():
                    entry.future.set_result(None)
            else:
                entry.left[info.row] = True
        if entry is not None and entry.state == QUEUED:
            # Its newest observation is still queued: that row becomes the interrupted terminal row.
            self._batcher.unqueue_row(entry)
            self.stats.leaves += 1
            self._batcher.wake()
        elif entry is not None or info.in_episode:
            # Acting (in flight) or acted: the episode ends after its last action.
            assert info.last is not None
            last = final if final is not None else entry_obs(info.last, info.row)
            self._batcher.push_leave(Leave(name, agent_id, last, final_reward))
            self.stats.leaves += 1
        else:
            self._batcher.wake()
        return True

    # ----- multi-agent groups (Unity's SimpleMultiAgentGroup) ------------------------------------

    def set_group(self, agent_id: int | np.integer[Any], group_id: int) -> None:
        """Put an agent in a multi-agent group (``group_id`` > 0; 0 takes it out), for POCA.

        Its rows then carry the group id, and :meth:`add_group_reward` rewards it with its group.
        Membership lasts across episodes, until changed, or until the agent leaves (:meth:`leave`).

        :raises SpecError: a group id that is not an int >= 0.
        """
        agent_id = check.check_agent_id(agent_id)
        if isinstance(group_id, bool) or not isinstance(group_id, (int, np.integer)) or group_id < 0:
            raise SpecError(
                f"GameSession: group ids are ints >= 0 (0: no group), got {group_id!r} for agent {agent_id}."
            )
        if group_id:
            self._group_of[agent_id] = int(group_id)
        else:
            self._group_of.pop(agent_id, None)
            self._group_due.pop(agent_id, None)

    def add_group_reward(self, group_id: int, reward: float) -> int:
        """Give ``reward`` to every agent of the group (Unity's ``AddGroupReward``): each gets it with its
        next decision or episode end, as the group reward beside its own.

        :returns: how many agents the group has.
        :raises SpecError: a reward that is not finite as a float32.
        """
        value = check.check_group_reward(group_id, reward)
        members = [agent for agent, group in self._group_of.items() if group == group_id]
        for agent in members:
            self._group_due[agent] = self._group_due.get(agent, 0.0) + value
        return len(members)

    def _with_groups(self, batches: dict[str, StepBatch]) -> dict[str, StepBatch]:
        """Each row's group id and the group reward due to its agent (None arrays when no agent is grouped)."""
        if not self._group_of:
            return batches
        out = {}
        for name, batch in batches.items():
            d, t = batch.decision, batch.terminal
            t_group, t_reward = self._group_rows(t.agent_id)
            d_group, d_reward = self._group_rows(d.agent_id)
            for agent in t.agent_id.tolist():  # a finished episode: its group reward is reported
                self._group_due.pop(agent, None)
            out[name] = dataclasses.replace(
                batch,
                decision=dataclasses.replace(d, group_id=d_group, group_reward=d_reward),
                terminal=dataclasses.replace(t, group_id=t_group, group_reward=t_reward),
            )
        return out

    def _group_rows(self, agent_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = agent_ids.tolist()
        groups = np.fromiter((self._group_of.get(a, 0) for a in ids), np.int64, len(ids))
        rewards = np.fromiter((self._group_due.pop(a, 0.0) for a in ids), np.float32, len(ids))
        return groups, rewards

    # ----- the env loop's side (AsyncEnv) -------------------------------------------------------

    async def reset(self) -> dict[str, StepBatch]:
        """Start (or restart) serving the env loop: return what is queued now, without waiting.

        Decisions that a previous env loop collected but never answered are queued again.
        """
        self.check_open()
        self._batcher.requeue()
        return self._collect()

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        """Answer the last batch's decisions with ``actions``, then wait for and return the next batch."""
        self.check_open()
        if self._recorders:
            self._record_decisions(actions)
        self._batcher.deliver(actions)
        await self._batcher.wait()
        self.check_open()
        self.stats.steps += 1
        return self._collect()

    async def aclose(self, *, reason: str | None = None) -> None:
        """Close the session: every ``decide()`` not answered yet fails with :class:`EnvError`.

        :param reason: said in that error (default: the Runner stopped or aclose() was called).
        """
        if self._batcher.closed:
            return
        self._close_reason = reason
        for entry in self._batcher.close():
            _fail(
                entry,
                f"The GameSession was closed while {entry.who()} of behavior '{entry.behavior}' "
                f"waited for a decision ({reason or 'the Runner stopped or aclose() was called'}).",
            )
        for info in self._agents.values():
            info.waiting = None

    def fail_decisions(self, behavior: str, reason: str) -> int:
        """Answer the decisions of ``behavior``'s batch in flight with an :class:`EnvError` saying
        ``reason``, instead of actions; the session stays open and the other behaviors' batches
        in flight still await ``step()``'s actions. For a policy that could not act on one batch.

        :returns: how many ``decide``/``decide_batch`` calls failed (0 when none was in flight).
        """
        dropped = self._batcher.drop_in_flight(behavior)
        if dropped:
            self.stats.failed_batches += 1
        for entry in dropped:
            _fail(entry, f"No action for {entry.who()} of behavior '{behavior}': {reason}")
        return len(dropped)

    def _collect(self) -> dict[str, StepBatch]:
        out, rows = self._batcher.collect()
        out = self._with_groups(out)
        if self._recorders:
            self._record_terminals(out)
        if rows:
            self.stats.decisions += rows
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, rows)
        return out

    # ----- recording ----------------------------------------------------------------------------

    def record(
        self,
        path: str | Path,
        *,
        behavior: str | None = None,
        agents: Sequence[int] | None = None,
        team: int = 0,
    ) -> DemoRecorder:
        """Start recording a behavior's agents (all, or ``agents``) to a ``.demo`` file while the session runs.

        Every decision of a recorded agent is written with the action it got (the policy's, or a
        player's given to :meth:`decide`), and every episode end. Writes happen in the
        background, off the loop; ``await recorder.aclose()`` (or leaving its ``async with``)
        finishes the file and stops the recording. The file is Unity's format: ML-Agents'
        behavioral cloning and GAIL, and asynctrainer's, read it.
        """
        from asynctrainer.demos.recorder import DemoRecorder

        self.check_open()
        name = self._behavior(behavior)
        recorder = DemoRecorder(path, self._specs[name], name, agents=agents, team=team)
        self._recorders.setdefault(name, []).append(recorder)
        recorder.on_close(self._stop_recording)
        return recorder

    def _stop_recording(self, recorder: DemoRecorder) -> None:
        recorders = self._recorders.get(recorder.behavior_name, [])
        if recorder in recorders:
            recorders.remove(recorder)
        if not recorders:
            self._recorders.pop(recorder.behavior_name, None)

    def _record_terminals(self, collected: dict[str, StepBatch]) -> None:
        """Write the episode ends of a batch just collected; keep it for its decisions' actions."""
        from asynctrainer.demos.recorder import record_terminals

        self._collected = collected
        record_terminals(self._recorders, collected)

    def _record_decisions(self, actions: dict[str, ActionBatch]) -> None:
        """Write the decisions of the batch in flight with the actions the env loop chose for them."""
        from asynctrainer.demos.recorder import record_decisions

        record_decisions(self._recorders, self._collected, actions)
        self._collected = {}

    def _player_decision(
        self,
        agent_id: Any,
        obs: Any,
        reward: Any,
        terminated: Any,
        truncated: Any,
        behavior: str | None,
        action_mask: Any,
        action: Any,
    ) -> AgentAction | None:
        """A player-driven agent's decision: recorded with the player's action, never sent to the env loop."""
        agent_id, name, parts, value, ended, trunc, mask = self._checked_single(
            agent_id, obs, reward, terminated, truncated, behavior, action_mask
        )
        known = self._players.get(agent_id)
        if known is not None and known[0] != name:
            raise SpecError(
                f"GameSession: agent {agent_id} belongs to behavior '{known[0]}', not '{name}'; "
                "call leave() before reusing its id for another behavior."
            )
        if agent_id in self._agents:
            raise SpecError(
                f"GameSession: agent {agent_id} of behavior '{name}' is in an episode the policy plays; "
                "end it (terminated/truncated) or leave() the agent before a player drives it."
            )
        if not (ended or trunc) and action is None:
            raise SpecError(
                f"GameSession: agent {agent_id} of behavior '{name}' is player-driven: its decide() needs "
                "action=... until its episode ends or it leaves."
            )
        chosen = None if ended or trunc else check.player_action(self._specs[name], name, agent_id, action)
        # Every check passed: from here on the call changes state and raises nothing.
        for recorder in self._recorders.get(name, ()):
            if recorder.wants(agent_id):
                recorder.add(
                    agent_id,
                    list(parts),
                    reward=value,
                    done=chosen is None,
                    interrupted=trunc and not ended,
                    continuous=None if chosen is None else chosen.continuous,
                    discrete=None if chosen is None else chosen.discrete,
                    mask=None if chosen is None else mask,
                )
        if chosen is None:
            self._players.pop(agent_id, None)
            self.stats.episodes_ended += 1
        else:
            self._players[agent_id] = (name, parts)
        return chosen

    def _player_leaves(self, agent_id: int, obs: Any, reward: Any) -> bool:
        name, last = self._players[agent_id]
        final = last if obs is None else check.single_obs(self._specs[name], name, agent_id, obs)
        value = check.check_reward(name, agent_id, reward)
        del self._players[agent_id]
        for recorder in self._recorders.get(name, ()):
            if recorder.wants(agent_id):
                recorder.add(agent_id, list(final), reward=value, done=True, interrupted=True)
        self.stats.leaves += 1
        return True

    # ----- checks and registration ---------------------------------------------------------------

    def _behavior(self, behavior: str | None, agent_id: int | None = None) -> str:
        if behavior is not None and not isinstance(behavior, str):
            raise SpecError(
                f"GameSession: {check.who(agent_id)} names behavior {behavior!r}, which is not a str; "
                f"known behaviors: {sorted(self._specs)}."
            )
        if behavior is None:
            if self._only is None:
                raise SpecError(
                    f"GameSession: {check.who(agent_id)} gave no behavior, and the session has several: "
                    f"{sorted(self._specs)}; pass behavior=..."
                )
            return self._only
        if behavior not in self._specs:
            raise SpecError(
                f"GameSession: {check.who(agent_id)} names unknown behavior '{behavior}'; "
                f"known behaviors: {sorted(self._specs)}."
            )
        return behavior

    def _check_joinable(self, name: str, agent_id: int) -> None:
        """:raises SpecError: the agent has another behavior, or a decision pending that is not given up."""
        info = self._agents.get(agent_id)
        if info is None:
            return
        if info.behavior != name:
            raise SpecError(
                f"GameSession: agent {agent_id} belongs to behavior '{info.behavior}', not '{name}'; "
                "call leave() before reusing its id for another behavior."
            )
        waiting = info.waiting
        if waiting is not None and not (
            isinstance(waiting, Single) and waiting.future is not None and waiting.future.cancelled()
        ):
            raise SpecError(
                f"GameSession: agent {agent_id} of behavior '{name}' already has a pending decision; "
                "await it before calling decide() again."
            )

    def _join(self, name: str, agent_id: int) -> Agent:
        """The agent's record (new if it had none), after :meth:`_check_joinable` passed.

        A decision its caller gave up on (cancelled, e.g. by a timeout) is superseded: still
        queued, it is dropped and its reward carried over to the agent's next decision; already
        handed to the env loop, it is acted on and its action discarded.
        """
        info = self._agents.get(agent_id)
        if info is None:
            info = self._agents[agent_id] = Agent(name)
            return info
        old = info.waiting
        if old is not None:
            info.waiting = None
            if old.state == QUEUED:
                assert isinstance(old, Single)
                old.state = DONE  # the collector skips it
                self._batcher.unqueue_row(old)
                self._carry[agent_id] = self._carry.get(agent_id, 0.0) + old.reward
        return info

    def _take_carry(self, agent_id: int) -> float:
        return self._carry.pop(agent_id, 0.0) if self._carry else 0.0

    # ----- queueing ----------------------------------------------------------------------------

    def _checked_single(
        self,
        agent_id: Any,
        obs: Any,
        reward: Any,
        terminated: Any,
        truncated: Any,
        behavior: str | None,
        action_mask: Any,
    ) -> tuple[int, str, tuple[Any, ...], float, bool, bool, Any]:
        """One ``decide()``'s arguments checked: agent id, behavior, observations, reward, the two flags, mask."""
        self.check_open()
        agent_id = check.check_agent_id(agent_id)
        name = self._behavior(behavior, agent_id)
        spec = self._specs[name]
        parts = check.single_obs(spec, name, agent_id, obs)
        value = check.check_reward(name, agent_id, reward)
        term = check.check_flag(terminated, "terminated", agent_id, name)
        trunc = check.check_flag(truncated, "truncated", agent_id, name)
        mask = check.action_mask(spec, name, action_mask, None, lambda _: f"agent {agent_id} of behavior '{name}'")
        return agent_id, name, parts, value, term, trunc, mask

    def _submit_single(
        self,
        agent_id: Any,
        obs: Any,
        reward: Any,
        terminated: Any,
        truncated: Any,
        behavior: str | None,
        action_mask: Any,
    ) -> Single:
        agent_id, name, parts, value, term, trunc, mask = self._checked_single(
            agent_id, obs, reward, terminated, truncated, behavior, action_mask
        )
        self._check_joinable(name, agent_id)
        # Every check passed: from here on the call changes state and raises nothing.
        info = self._join(name, agent_id)
        value = _add_reward(value, self._take_carry(agent_id))
        ended = term or trunc
        future: asyncio.Future[AgentAction | None] | None = None
        if not ended:
            future = asyncio.get_running_loop().create_future()
        entry = Single(name, agent_id, parts, value, mask, future, trunc and not term)
        info.last = entry
        info.row = 0
        if ended:
            info.in_episode = False
            self.stats.episodes_ended += 1
        else:
            info.waiting = entry
            info.in_episode = True
        self._batcher.push(entry)
        return entry

    def _submit_batch(
        self,
        behavior: str | None,
        agent_ids: Any,
        obs: Any,
        rewards: Any,
        terminated: Any,
        truncated: Any,
        action_mask: Any,
    ) -> Batch:
        self.check_open()
        name = self._behavior(behavior)
        spec = self._specs[name]
        ids = check.check_agent_ids(agent_ids, name)
        n = len(ids)

        def who(row: int) -> str:
            return f"agent {int(ids[row])} of behavior '{name}'"

        arrays = check.batch_obs(spec, name, n, obs, who)
        rew = check.batch_rewards(rewards, n, name, who)
        term = check.flags(terminated, n, "terminated", name)
        trunc = check.flags(truncated, n, "truncated", name)
        mask = check.action_mask(spec, name, action_mask, n, who)
        id_list: list[int] = ids.tolist()
        for aid in id_list:
            self._check_joinable(name, aid)
        # Every check passed: from here on the call changes state and raises nothing.
        if self._carry:
            for row, aid in enumerate(id_list):
                if aid in self._carry:
                    rew[row] = _add_reward(float(rew[row]), self._carry.pop(aid))
        ended = term | trunc
        future: asyncio.Future[ActionBatch] = asyncio.get_running_loop().create_future()
        entry = Batch(name, ids, arrays, rew, mask, ended, trunc & ~term, future)
        for row, (aid, done) in enumerate(zip(id_list, ended.tolist(), strict=True)):
            info = self._join(name, aid)
            info.last, info.row = entry, row
            if done:
                info.in_episode = False
            else:
                info.waiting = entry
                info.in_episode = True
        self.stats.episodes_ended += n - entry.n_decide
        self._batcher.push(entry)
        return entry


def _add_reward(value: float, carried: float) -> float:
    """``value + carried``, kept within float32's range (a carried-over reward never overflows it)."""
    if not carried:
        return value
    return max(-check.FLOAT32_MAX, min(check.FLOAT32_MAX, value + carried))


def _fail(entry: Entry, message: str) -> None:
    """Fail ``entry``'s call with an :class:`EnvError` saying ``message``; the entry is done."""
    fut = entry.future
    if fut is not None and not fut.done():
        fut.set_exception(EnvError(message))
        # Nobody may be awaiting it any more; do not warn about an unretrieved exception.
        fut.add_done_callback(_consume_exception)
    entry.state = DONE


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
