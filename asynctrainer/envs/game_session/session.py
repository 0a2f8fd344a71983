"""GameSession: an :class:`AsyncEnv` fed by a host program's ``decide()`` calls (DESIGN §3, §8).

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
import math
import operator
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, DecisionSteps, StepBatch, TerminalSteps
from asynctrainer.errors import EnvError, SpecError

__all__ = ["AgentAction", "GameSession", "SessionStats"]

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: dtype kinds that cast to float32 without losing meaning: bool, signed, unsigned, float.
_CASTABLE_KINDS = frozenset("biuf")


class AgentAction(NamedTuple):
    """One agent's action: ``continuous`` float32 ``[continuous_size]`` in [-1, 1] and
    ``discrete`` int32 ``[n_branches]`` (either may be empty, as the action spec says)."""

    continuous: F32
    discrete: I32


@dataclass
class SessionStats:
    """Counters of what went through a session (or a :class:`~asynctrainer.serving.server.PolicyServer`).

    :ivar steps: batches handed to the env loop by ``step()`` (its env steps).
    :ivar decisions: agent decisions acted on (rows of all ``DecisionSteps`` handed out).
    :ivar batches: ``DecisionSteps`` batches handed out that had at least one decision.
    :ivar episodes_ended: terminated or truncated episodes reported by the host.
    :ivar leaves: agents that left while in an episode (interrupted trajectories).
    :ivar largest_batch: the most decisions handed out in one step.
    """

    steps: int = 0
    decisions: int = 0
    batches: int = 0
    episodes_ended: int = 0
    leaves: int = 0
    largest_batch: int = 0


_QUEUED, _IN_FLIGHT, _DONE = 0, 1, 2


class _Single:
    """One ``decide()`` call: a decision (``future`` set) or an episode end (``future`` None)."""

    __slots__ = ("agent_id", "behavior", "ended", "future", "interrupted", "left", "mask", "obs", "reward", "state")

    def __init__(
        self,
        behavior: str,
        agent_id: int,
        obs: tuple[F32, ...],
        reward: float,
        mask: B | None,
        future: asyncio.Future[AgentAction | None] | None,
        interrupted: bool,
    ) -> None:
        self.behavior = behavior
        self.agent_id = agent_id
        self.obs = obs
        self.reward = reward
        self.mask = mask
        self.future = future
        self.ended = future is None
        self.interrupted = interrupted
        self.left = False
        self.state = _QUEUED

    @property
    def decision_rows(self) -> int:
        return 0 if self.ended or self.left or self.state == _DONE else 1


class _Batch:
    """One ``decide_batch()`` call; rows that ended or left become terminal rows."""

    __slots__ = (
        "agent_ids",
        "behavior",
        "ended",
        "future",
        "interrupted",
        "left",
        "mask",
        "n_decide",
        "obs",
        "rewards",
        "rows",
        "state",
    )

    def __init__(
        self,
        behavior: str,
        agent_ids: I64,
        obs: list[F32],
        rewards: F32,
        mask: B | None,
        ended: B,
        interrupted: B,
        future: asyncio.Future[ActionBatch],
    ) -> None:
        self.behavior = behavior
        self.agent_ids = agent_ids
        self.obs = obs
        self.rewards = rewards
        self.mask = mask
        self.ended = ended
        self.interrupted = interrupted
        self.future = future
        self.left = np.zeros(len(agent_ids), bool)
        self.n_decide = int((~ended).sum())
        self.rows: npt.NDArray[np.intp] | None = None  # rows acted on, set when collected
        self.state = _QUEUED

    @property
    def decision_rows(self) -> int:
        return self.n_decide


_Entry = _Single | _Batch


class _Agent:
    """What the session remembers about one joined agent."""

    __slots__ = ("behavior", "in_episode", "last", "row", "waiting")

    def __init__(self, behavior: str) -> None:
        self.behavior = behavior
        self.waiting: _Entry | None = None  # the queued or in-flight decision of this agent
        self.last: _Entry | None = None  # where its newest observation is
        self.row = 0  # its row in ``last`` / ``waiting`` when that is a _Batch
        self.in_episode = False  # it has acted since its last episode end


class _Leave(NamedTuple):
    behavior: str
    agent_id: int
    obs: tuple[F32, ...]
    reward: float


class _InFlight(NamedTuple):
    """One behavior's batch handed to the env loop: ``decide_batch`` entries (with their rows)
    first, then ``decide`` entries, one row each from ``singles_start`` on."""

    ids: I64
    sinks: list[_Sink]
    singles: list[_Single]
    singles_start: int

    def entries(self) -> list[_Entry]:
        return [*(sink.entry for sink in self.sinks), *self.singles]


class _Sink(NamedTuple):
    """Where the actions of rows ``[start, start + count)`` of a step's batch go."""

    entry: _Entry
    start: int
    size: int


def _entry_obs(entry: _Entry, row: int) -> tuple[F32, ...]:
    if isinstance(entry, _Single):
        return entry.obs
    return tuple(o[row] for o in entry.obs)


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
        self._empty_terminal = {name: TerminalSteps.empty(spec) for name, spec in self._specs.items()}
        #: behavior → its observation shape, for behaviors with a single observation (the fast path).
        self._single_shape = {
            name: spec.observation_specs[0].shape
            for name, spec in self._specs.items()
            if len(spec.observation_specs) == 1
        }
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.stats = SessionStats()
        self._agents: dict[int, _Agent] = {}
        self._queue: deque[_Entry] = deque()
        self._leaves: list[_Leave] = []
        self._queued_decisions = 0
        self._first_at: float | None = None  # loop time when the oldest queued item arrived
        self._in_flight: dict[str, _InFlight] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._wait_for_any = True
        self._closed = False
        self._close_reason: str | None = None
        self._carry: dict[int, float] = {}  # rewards of dropped decisions, by agent

    # ----- the host's side ----------------------------------------------------------------------

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def agent_ids(self) -> list[int]:
        """Agents that joined (called ``decide``) and did not leave."""
        return list(self._agents)

    @property
    def pending(self) -> int:
        """Decisions queued and not yet handed to the env loop."""
        return self._queued_decisions

    async def decide(
        self,
        agent_id: int | np.integer[Any],
        obs: Any,
        reward: float = 0.0,
        terminated: bool = False,
        truncated: bool = False,
        *,
        behavior: str | None = None,
        action_mask: Any = None,
    ) -> AgentAction | None:
        """Report one agent's observation (and the reward since its last action); return its action.

        :param obs: the observation (array-like of the spec's shape) when the behavior has one
            observation spec, else a sequence with one array-like per observation spec. Any
            bool/int/float dtype is cast to float32.
        :param reward: the reward the agent received since its previous decision.
        :param terminated: the episode ended for real (the learner bootstraps with 0).
        :param truncated: the episode was cut short, e.g. by a time limit (interrupted: the
            learner bootstraps from ``obs``). ``terminated`` wins when both are set.
        :param behavior: the agent's behavior; may be omitted when the session has only one.
        :param action_mask: for discrete actions, booleans ``[sum(branches)]`` where True
            forbids an action (ML-Agents' convention), or None.
        :returns: the agent's :class:`AgentAction`, or ``None`` when no action is due: the call
            ended the episode, or the agent left while waiting.
        :raises SpecError: bad input (named by agent and behavior), or this agent already has
            a decision pending. A pending ``decide()`` whose caller was cancelled (say, by a
            timeout) does not count: still queued, it is dropped and its reward carried over
            to this call; already with the env loop, it is acted on and its action discarded.
        :raises EnvError: the session is (or gets) closed.
        """
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

        :param agent_ids: ints ``[n]``, distinct.
        :param obs: one array ``[n, *shape]`` when the behavior has one observation spec, else
            a sequence with one such array per spec.
        :param rewards: floats ``[n]`` (default 0); ``terminated`` / ``truncated``: bools ``[n]``.
        :param action_mask: booleans ``[n, sum(branches)]``, True = forbidden, or None.
        :returns: an :class:`ActionBatch` aligned with ``agent_ids``. Rows whose episode ended
            in this call, and rows of agents that left while waiting, hold zeros.
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
        agent_id = self._check_agent_id(agent_id)
        info = self._agents.get(agent_id)
        if info is None:
            return False
        name = info.behavior
        final = None if obs is None else self._single_obs(name, agent_id, obs)
        final_reward = self._check_reward(name, agent_id, reward) + self._carry.pop(agent_id, 0.0)
        del self._agents[agent_id]
        entry = info.waiting
        if entry is not None:
            if isinstance(entry, _Single):
                entry.left = True
                if entry.future is not None and not entry.future.done():
                    entry.future.set_result(None)
            else:
                entry.left[info.row] = True
        if entry is not None and entry.state == _QUEUED:
            # Its newest observation is still queued: that row becomes the interrupted terminal row.
            self._queued_decisions -= 1
            if isinstance(entry, _Batch):
                entry.n_decide -= 1
            self.stats.leaves += 1
        elif entry is not None or info.in_episode:
            # Acting (in flight) or acted: the episode ends after its last action.
            assert info.last is not None
            last = final if final is not None else _entry_obs(info.last, info.row)
            self._leaves.append(_Leave(name, agent_id, last, final_reward))
            self._note_arrival()
            self.stats.leaves += 1
        self._maybe_wake()
        return True

    # ----- the env loop's side (AsyncEnv) -------------------------------------------------------

    async def reset(self) -> dict[str, StepBatch]:
        """Start (or restart) serving the env loop: return what is queued now, without waiting.

        Decisions that a previous env loop collected but never answered are queued again.
        """
        self._check_open()
        if self._in_flight:
            requeue: list[_Entry] = []
            for flight in self._in_flight.values():
                for entry in flight.entries():
                    if entry.state == _IN_FLIGHT:
                        entry.state = _QUEUED
                        if isinstance(entry, _Batch):
                            entry.n_decide = int((~entry.ended & ~entry.left).sum())
                        self._queued_decisions += entry.decision_rows
                        requeue.append(entry)
            self._in_flight = {}
            self._queue.extendleft(reversed(requeue))
            if requeue:
                self._note_arrival()
        return self._collect()

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        """Answer the last batch's decisions with ``actions``, then wait for and return the next batch."""
        self._check_open()
        self._deliver(actions)
        await self._wait_for_batch()
        self.stats.steps += 1
        return self._collect()

    async def aclose(self, *, reason: str | None = None) -> None:
        """Close the session: every ``decide()`` still waiting fails with :class:`EnvError`.

        :param reason: said in that error (default: the Runner stopped or aclose() was called).
        """
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        pending: list[_Entry] = list(self._queue)
        for flight in self._in_flight.values():
            pending.extend(flight.entries())
        self._queue.clear()
        self._in_flight = {}
        self._leaves.clear()
        self._queued_decisions = 0
        for entry in pending:
            fut = entry.future
            if fut is not None and not fut.done():
                who = f"agent {entry.agent_id}" if isinstance(entry, _Single) else f"{len(entry.agent_ids)} agents"
                fut.set_exception(
                    EnvError(
                        f"The GameSession was closed while {who} of behavior '{entry.behavior}' "
                        f"waited for a decision ({reason or 'the Runner stopped or aclose() was called'})."
                    )
                )
                # Nobody may be awaiting it any more; do not warn about an unretrieved exception.
                fut.add_done_callback(_consume_exception)
            entry.state = _DONE
        for info in self._agents.values():
            info.waiting = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ----- validation -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            why = self._close_reason or "its Runner stopped, or aclose() was called"
            raise EnvError(
                f"This GameSession is closed ({why}); create a new one, "
                "or serve the trained policy with asynctrainer.serving.server.PolicyServer."
            )

    def _behavior(self, behavior: str | None, agent_id: int | None = None) -> str:
        if behavior is None:
            if self._only is None:
                raise SpecError(
                    f"GameSession: {_who(agent_id)} gave no behavior, and the session has several: "
                    f"{sorted(self._specs)}; pass behavior=..."
                )
            return self._only
        if behavior not in self._specs:
            raise SpecError(
                f"GameSession: {_who(agent_id)} names unknown behavior '{behavior}'; "
                f"known behaviors: {sorted(self._specs)}."
            )
        return behavior

    @staticmethod
    def _check_agent_id(agent_id: Any) -> int:
        if type(agent_id) is int:
            return agent_id
        if isinstance(agent_id, bool | np.bool_):
            raise SpecError(f"GameSession: agent ids are ints, got {agent_id!r}.")
        try:
            return operator.index(agent_id)
        except TypeError:
            raise SpecError(f"GameSession: agent ids are ints, got {type(agent_id).__name__} {agent_id!r}.") from None

    @staticmethod
    def _as_float(value: Any, where: Any) -> F32:
        """A float32 copy of ``value``; ``where()`` names it in errors (built only when one is raised)."""
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged lists and the like
            raise SpecError(f"GameSession: {where()} is not an array: {exc}") from None
        if arr.dtype.kind not in _CASTABLE_KINDS:
            raise SpecError(f"GameSession: {where()} has dtype {arr.dtype}, which cannot be cast to float32.")
        # Always a copy: the host may reuse its buffers while the learner still holds these rows.
        return np.array(arr, dtype=np.float32)

    def _single_obs(self, name: str, agent_id: int, obs: Any) -> tuple[F32, ...]:
        specs = self._specs[name].observation_specs
        if len(specs) == 1:
            arr = self._as_float(obs, lambda: f"the observation of agent {agent_id} of behavior '{name}'")
            if arr.shape != specs[0].shape:
                raise SpecError(
                    f"GameSession: the observation of agent {agent_id} of behavior '{name}' has shape {arr.shape}, "
                    f"expected {specs[0].shape}."
                )
            if not np.isfinite(arr).all():
                raise SpecError(
                    f"GameSession: the observation of agent {agent_id} of behavior '{name}' "
                    "contains NaN or infinite values."
                )
            return (arr,)
        who = f"agent {agent_id} of behavior '{name}'"
        if not isinstance(obs, list | tuple) or len(obs) != len(specs):
            raise SpecError(
                f"GameSession: {who} must give {len(specs)} observations (one per observation spec), "
                f"got {type(obs).__name__}."
            )
        out = []
        for i, (part, spec) in enumerate(zip(obs, specs, strict=True)):
            arr = self._as_float(part, lambda i=i: f"observation {i} of {who}")
            if arr.shape != spec.shape:
                raise SpecError(f"GameSession: observation {i} of {who} has shape {arr.shape}, expected {spec.shape}.")
            if not np.isfinite(arr).all():
                raise SpecError(f"GameSession: observation {i} of {who} contains NaN or infinite values.")
            out.append(arr)
        return tuple(out)

    @staticmethod
    def _check_reward(name: str, agent_id: int, reward: Any) -> float:
        try:
            value = float(reward)
        except (TypeError, ValueError):
            raise SpecError(
                f"GameSession: the reward of agent {agent_id} of behavior '{name}' is not a number: {reward!r}."
            ) from None
        if not math.isfinite(value):
            raise SpecError(f"GameSession: the reward of agent {agent_id} of behavior '{name}' is {value}.")
        return value

    def _single_mask(self, name: str, agent_id: int, action_mask: Any) -> B | None:
        if action_mask is None:
            return None
        spec = self._specs[name].action_spec
        who = f"agent {agent_id} of behavior '{name}'"
        if not spec.is_discrete():
            raise SpecError(f"GameSession: {who} gave an action mask, but the behavior has no discrete actions.")
        mask = np.array(action_mask, dtype=bool)
        if mask.shape != (spec.mask_size,):
            raise SpecError(
                f"GameSession: the action mask of {who} has shape {mask.shape}, expected ({spec.mask_size},)."
            )
        self._check_mask_rows(mask[None], spec.discrete_branches, lambda _: who)
        return mask

    @staticmethod
    def _check_mask_rows(mask: B, branches: tuple[int, ...], who: Any) -> None:
        start = 0
        for b, size in enumerate(branches):
            full = mask[:, start : start + size].all(axis=1)
            if full.any():
                row = int(np.flatnonzero(full)[0])
                raise SpecError(f"GameSession: the action mask of {who(row)} forbids every action of branch {b}.")
            start += size

    def _register(self, name: str, agent_id: int) -> _Agent:
        info = self._agents.get(agent_id)
        if info is None:
            info = self._agents[agent_id] = _Agent(name)
            return info
        if info.behavior != name:
            raise SpecError(
                f"GameSession: agent {agent_id} belongs to behavior '{info.behavior}', not '{name}'; "
                "call leave() before reusing its id for another behavior."
            )
        waiting = info.waiting
        if waiting is not None:
            if isinstance(waiting, _Single) and waiting.future is not None and waiting.future.cancelled():
                self._supersede(info, waiting)
                return info
            raise SpecError(
                f"GameSession: agent {agent_id} of behavior '{name}' already has a pending decision; "
                "await it before calling decide() again."
            )
        return info

    def _supersede(self, info: _Agent, old: _Single) -> None:
        """Its caller gave up on ``old`` (cancelled, e.g. by a timeout): the agent may decide again.

        A queued ``old`` is dropped, its reward carried over to the agent's next decision; an
        ``old`` already handed to the env loop is acted on, and its action discarded.
        """
        info.waiting = None
        if old.state == _QUEUED:
            old.state = _DONE  # the collector skips it
            self._queued_decisions -= 1
            self._carry[old.agent_id] = self._carry.get(old.agent_id, 0.0) + old.reward

    # ----- queueing ----------------------------------------------------------------------------

    def _submit_single(
        self,
        agent_id: Any,
        obs: Any,
        reward: Any,
        terminated: bool,
        truncated: bool,
        behavior: str | None,
        action_mask: Any,
    ) -> _Single:
        if self._closed:
            self._check_open()
        if type(agent_id) is not int:
            agent_id = self._check_agent_id(agent_id)
        name = self._only if behavior is None and self._only is not None else self._behavior(behavior, agent_id)
        shape = self._single_shape.get(name)
        if shape is not None and type(obs) is np.ndarray and obs.dtype == np.float32 and obs.shape == shape:
            # The common case, kept lean: one float32 observation of the right shape.
            arr = obs.copy()
            if not np.isfinite(arr).all():
                raise SpecError(
                    f"GameSession: the observation of agent {agent_id} of behavior '{name}' "
                    "contains NaN or infinite values."
                )
            parts: tuple[F32, ...] = (arr,)
        else:
            parts = self._single_obs(name, agent_id, obs)
        value = (
            reward if type(reward) is float and reward - reward == 0.0 else self._check_reward(name, agent_id, reward)
        )
        mask = None if action_mask is None else self._single_mask(name, agent_id, action_mask)
        info = self._agents.get(agent_id)
        if info is None or info.behavior != name or info.waiting is not None:
            info = self._register(name, agent_id)  # a new agent, a superseded decision, or an error
        if self._carry:
            value += self._carry.pop(agent_id, 0.0)
        ended = bool(terminated) or bool(truncated)
        future: asyncio.Future[AgentAction | None] | None = None
        loop = asyncio.get_running_loop()
        if not ended:
            future = loop.create_future()
        entry = _Single(name, agent_id, parts, value, mask, future, bool(truncated) and not bool(terminated))
        info.last = entry
        info.row = 0
        if ended:
            info.in_episode = False
            self.stats.episodes_ended += 1
        else:
            info.waiting = entry
            info.in_episode = True
            self._queued_decisions += 1
        self._queue.append(entry)
        if self._first_at is None:
            self._first_at = loop.time()
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (self._wait_for_any or self._ready()):
            waiter.set_result(None)
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
    ) -> _Batch:
        self._check_open()
        name = self._behavior(behavior)
        spec = self._specs[name]
        try:
            ids = np.asarray(agent_ids)
        except Exception as exc:
            raise SpecError(f"GameSession: decide_batch() agent_ids of behavior '{name}' are not ints: {exc}") from None
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise SpecError(
                f"GameSession: decide_batch() of behavior '{name}' needs agent_ids as ints [n], "
                f"got dtype {ids.dtype} shape {ids.shape}."
            )
        ids = ids.astype(np.int64)  # a copy, like every array the session keeps
        n = len(ids)
        if n == 0:
            raise SpecError(f"GameSession: decide_batch() of behavior '{name}' got no agents.")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise SpecError(
                f"GameSession: decide_batch() of behavior '{name}' lists agent {int(uniq[counts > 1][0])} twice."
            )

        def who(row: int) -> str:
            return f"agent {int(ids[row])} of behavior '{name}'"

        specs = spec.observation_specs
        parts: Sequence[Any] = (obs,) if len(specs) == 1 else obs
        if len(specs) > 1 and (not isinstance(obs, list | tuple) or len(obs) != len(specs)):
            raise SpecError(
                f"GameSession: decide_batch() of behavior '{name}' must give {len(specs)} observation arrays "
                f"(one per observation spec), got {type(obs).__name__}."
            )
        arrays: list[F32] = []
        for i, (part, ospec) in enumerate(zip(parts, specs, strict=True)):
            arr = self._as_float(part, lambda i=i: f"observation {i} of decide_batch() of behavior '{name}'")
            if arr.shape != (n, *ospec.shape):
                raise SpecError(
                    f"GameSession: observation {i} of decide_batch() of behavior '{name}' has shape {arr.shape}, "
                    f"expected {(n, *ospec.shape)} for {n} agents."
                )
            bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
            if bad.any():
                raise SpecError(
                    f"GameSession: observation {i} of {who(int(np.flatnonzero(bad)[0]))} contains NaN or "
                    f"infinite values ({int(bad.sum())} agents of this batch do)."
                )
            arrays.append(arr)
        rew = (
            np.zeros(n, np.float32)
            if rewards is None
            else self._as_float(rewards, lambda: f"the rewards of decide_batch() of behavior '{name}'")
        )
        if rew.shape != (n,):
            raise SpecError(f"GameSession: rewards of behavior '{name}' have shape {rew.shape}, expected ({n},).")
        if not np.isfinite(rew).all():
            raise SpecError(
                f"GameSession: the reward of {who(int(np.flatnonzero(~np.isfinite(rew))[0]))} is not finite."
            )
        term = self._flags(terminated, n, "terminated", name)
        trunc = self._flags(truncated, n, "truncated", name)
        mask: B | None = None
        if action_mask is not None:
            if not spec.action_spec.is_discrete():
                raise SpecError(
                    f"GameSession: behavior '{name}' has no discrete actions, but an action mask was given."
                )
            mask = np.array(action_mask, dtype=bool)
            if mask.shape != (n, spec.action_spec.mask_size):
                raise SpecError(
                    f"GameSession: the action mask of behavior '{name}' has shape {mask.shape}, "
                    f"expected {(n, spec.action_spec.mask_size)}."
                )
            self._check_mask_rows(mask, spec.action_spec.discrete_branches, who)
        # Check every agent before changing any state: the call is all or nothing (a decision
        # whose caller gave up may be superseded on the way, which changes nothing it could see).
        agents = self._agents
        id_list = ids.tolist()
        for aid in id_list:
            info = agents.get(aid)
            if info is not None and (info.behavior != name or info.waiting is not None):
                self._register(name, aid)  # raises the precise error, or supersedes a cancelled decision
        if self._carry:
            for row, aid in enumerate(id_list):
                if aid in self._carry:
                    rew[row] += self._carry.pop(aid)
        ended = term | trunc
        future: asyncio.Future[ActionBatch] = asyncio.get_running_loop().create_future()
        entry = _Batch(name, ids, arrays, rew, mask, ended, trunc & ~term, future)
        for row, (aid, done) in enumerate(zip(id_list, ended.tolist(), strict=True)):
            info = agents.get(aid)
            if info is None:
                info = agents[aid] = _Agent(name)
            info.last, info.row = entry, row
            if done:
                info.in_episode = False
            else:
                info.waiting = entry
                info.in_episode = True
        n_ended = n - entry.n_decide
        self.stats.episodes_ended += n_ended
        self._queued_decisions += entry.n_decide
        self._queue.append(entry)
        self._note_arrival()
        self._maybe_wake()
        return entry

    def _flags(self, value: Any, n: int, what: str, name: str) -> B:
        if value is None:
            return np.zeros(n, bool)
        arr = np.asarray(value)
        if arr.shape != (n,) or arr.dtype.kind not in "biu":
            raise SpecError(
                f"GameSession: {what} of behavior '{name}' must be bools [{n}], "
                f"got dtype {arr.dtype} shape {arr.shape}."
            )
        return arr.astype(bool)

    def _note_arrival(self) -> None:
        if self._first_at is None:
            self._first_at = asyncio.get_running_loop().time()

    def _ready(self) -> bool:
        """Whether the queued items make a batch now (see the module docstring)."""
        if self._queued_decisions >= self.max_batch:
            return True
        return self._queued_decisions >= len(self._agents)

    def _maybe_wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (self._wait_for_any or self._ready()):
            waiter.set_result(None)

    async def _wait_for_batch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._check_open()
            timeout: float | None = None
            if self._queue or self._leaves:
                if self._ready():
                    return
                assert self._first_at is not None
                timeout = self._first_at + self.max_wait - loop.time()
                if timeout <= 0:
                    return
            self._wait_for_any = timeout is None
            waiter = self._waiter = loop.create_future()
            handle = None if timeout is None else loop.call_later(timeout, _wake, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if handle is not None:
                    handle.cancel()

    # ----- batching ----------------------------------------------------------------------------

    def _collect(self) -> dict[str, StepBatch]:
        """Turn what is queued (up to ``max_batch`` decisions) into one StepBatch per behavior."""
        queue = self._queue
        if self._queued_decisions <= self.max_batch:
            taken: list[_Entry] = list(queue)  # everything fits: take it at C speed
            queue.clear()
            rows = self._queued_decisions
        else:
            taken, rows = [], 0
            while queue:
                entry = queue[0]
                k = entry.decision_rows
                if rows and rows + k > self.max_batch:
                    break
                queue.popleft()
                taken.append(entry)
                rows += k
        self._queued_decisions -= rows
        leaves, self._leaves = self._leaves, []
        if queue:
            self._first_at = asyncio.get_running_loop().time()
        else:
            self._first_at = None

        by_behavior: dict[str, list[_Entry]] = {}
        if self._only is not None:
            by_behavior[self._only] = taken
        else:
            for entry in taken:
                by_behavior.setdefault(entry.behavior, []).append(entry)
        leaves_by: dict[str, list[_Leave]] = {}
        for leave in leaves:
            leaves_by.setdefault(leave.behavior, []).append(leave)

        out: dict[str, StepBatch] = {}
        for name, spec in self._specs.items():
            entries = by_behavior.get(name, [])
            gone = leaves_by.get(name, [])
            if not entries and not gone:
                continue
            out[name] = self._build(name, spec, entries, gone)
        if rows:
            self.stats.decisions += rows
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, rows)
        return out

    def _build(self, name: str, spec: BehaviorSpec, entries: list[_Entry], gone: list[_Leave]) -> StepBatch:
        if not gone and all(type(e) is _Single and e.state == _QUEUED and not e.ended and not e.left for e in entries):
            return self._build_singles(name, spec, entries)  # type: ignore[arg-type]
        n_obs = len(spec.observation_specs)
        discrete = spec.action_spec.is_discrete()
        # Decision rows.
        d_single: list[_Single] = []
        d_obs: list[list[F32]] = [[] for _ in range(n_obs)]
        d_rew: list[F32] = []
        d_ids: list[I64] = []
        d_mask: list[B | None] = []
        sinks: list[_Sink] = []
        # Terminal rows.
        t_obs: list[list[F32]] = [[] for _ in range(n_obs)]
        t_rew: list[F32] = []
        t_ids: list[I64] = []
        t_int: list[B] = []
        t_single: list[tuple[tuple[F32, ...], float, int, bool]] = []
        for leave in gone:
            t_single.append((leave.obs, leave.reward, leave.agent_id, True))
        n_dec = 0
        singles_start = 0
        for entry in entries:
            if entry.state == _DONE:
                continue  # superseded while queued
            if isinstance(entry, _Single):
                if entry.ended or entry.left:
                    t_single.append((entry.obs, entry.reward, entry.agent_id, entry.left or entry.interrupted))
                    entry.state = _DONE
                else:
                    d_single.append(entry)
                continue
            term_rows = entry.ended | entry.left
            if term_rows.any():
                idx = np.flatnonzero(term_rows)
                for i in range(n_obs):
                    t_obs[i].append(entry.obs[i][idx])
                t_rew.append(entry.rewards[idx])
                t_ids.append(entry.agent_ids[idx])
                t_int.append(entry.interrupted[idx] | entry.left[idx])
            if entry.n_decide == 0:
                entry.state = _DONE
                if not entry.future.done():
                    entry.future.set_result(self._empty_actions(spec, entry))
                continue
            if term_rows.any():
                rows = np.flatnonzero(~term_rows)
                entry.rows = rows
                for i in range(n_obs):
                    d_obs[i].append(entry.obs[i][rows])
                d_rew.append(entry.rewards[rows])
                d_ids.append(entry.agent_ids[rows])
                d_mask.append(None if entry.mask is None else entry.mask[rows])
            else:
                entry.rows = None
                for i in range(n_obs):
                    d_obs[i].append(entry.obs[i])
                d_rew.append(entry.rewards)
                d_ids.append(entry.agent_ids)
                d_mask.append(entry.mask)
            entry.state = _IN_FLIGHT
            sinks.append(_Sink(entry, n_dec, len(d_ids[-1])))
            n_dec += len(d_ids[-1])
        if d_single:
            k = len(d_single)
            for i in range(n_obs):
                d_obs[i].append(np.stack([e.obs[i] for e in d_single]))
            d_rew.append(np.fromiter((e.reward for e in d_single), np.float32, k))
            d_ids.append(np.fromiter((e.agent_id for e in d_single), np.int64, k))
            if discrete and any(e.mask is not None for e in d_single):
                full = np.zeros((k, spec.action_spec.mask_size), bool)
                for j, e in enumerate(d_single):
                    if e.mask is not None:
                        full[j] = e.mask
                d_mask.append(full)
            else:
                d_mask.append(None)
            singles_start = n_dec
            for e in d_single:
                e.state = _IN_FLIGHT
            n_dec += k
        if t_single:
            k = len(t_single)
            for i in range(n_obs):
                t_obs[i].append(np.stack([t[0][i] for t in t_single]))
            t_rew.append(np.fromiter((t[1] for t in t_single), np.float32, k))
            t_ids.append(np.fromiter((t[2] for t in t_single), np.int64, k))
            t_int.append(np.fromiter((t[3] for t in t_single), bool, k))

        if n_dec:
            ids = _cat(d_ids, np.int64)
            mask = None
            if discrete and any(m is not None for m in d_mask):
                mask = np.concatenate(
                    [
                        np.zeros((len(i), spec.action_spec.mask_size), bool) if m is None else m
                        for m, i in zip(d_mask, d_ids, strict=True)
                    ]
                )
            decision = DecisionSteps([_cat(parts, np.float32) for parts in d_obs], _cat(d_rew, np.float32), ids, mask)
            self._in_flight[name] = _InFlight(ids, sinks, d_single, singles_start)
        else:
            decision = DecisionSteps.empty(spec)
        if t_ids:
            terminal = TerminalSteps(
                [_cat(parts, np.float32) for parts in t_obs],
                _cat(t_rew, np.float32),
                _cat(t_ids, np.int64),
                _cat(t_int, np.bool_),
            )
        else:
            terminal = self._empty_terminal[name]
        return StepBatch(decision, terminal)

    def _build_singles(self, name: str, spec: BehaviorSpec, entries: list[_Single]) -> StepBatch:
        """The common case, kept lean for latency: only ``decide()`` calls that want an action."""
        k = len(entries)
        if k == 1:
            e = entries[0]
            obs = [o[None] for o in e.obs]
            ids = np.array([e.agent_id], np.int64)
            rewards = np.array([e.reward], np.float32)
        else:
            obs = [np.stack([e.obs[i] for e in entries]) for i in range(len(spec.observation_specs))]
            ids = np.fromiter((e.agent_id for e in entries), np.int64, k)
            rewards = np.fromiter((e.reward for e in entries), np.float32, k)
        mask = None
        if spec.action_spec.is_discrete() and any(e.mask is not None for e in entries):
            mask = np.zeros((k, spec.action_spec.mask_size), bool)
            for j, e in enumerate(entries):
                if e.mask is not None:
                    mask[j] = e.mask
        for e in entries:
            e.state = _IN_FLIGHT
        self._in_flight[name] = _InFlight(ids, [], entries, 0)
        return StepBatch(DecisionSteps(obs, rewards, ids, mask), self._empty_terminal[name])

    @staticmethod
    def _empty_actions(spec: BehaviorSpec, entry: _Batch) -> ActionBatch:
        n = len(entry.agent_ids)
        a = spec.action_spec
        return ActionBatch(
            np.zeros((n, a.continuous_size), np.float32), np.zeros((n, a.discrete_size), np.int32), entry.agent_ids
        )

    def _deliver(self, actions: dict[str, ActionBatch]) -> None:
        """Resolve the decisions of the last batch with the env loop's actions."""
        in_flight, self._in_flight = self._in_flight, {}
        extra = set(actions) - set(in_flight)
        if extra:
            raise SpecError(f"GameSession.step() got actions for {sorted(extra)}, which had no agents deciding.")
        agents = self._agents
        for name, flight in in_flight.items():
            ids = flight.ids
            batch = actions.get(name)
            if batch is None:
                raise SpecError(f"GameSession.step() got no actions for behavior '{name}' ({len(ids)} agents wait).")
            cont = np.asarray(batch.continuous, np.float32)
            disc = np.asarray(batch.discrete, np.int32)
            if cont.ndim == 1 and not self._specs[name].action_spec.continuous_size:
                cont = cont.reshape(len(ids), 0)
            a = self._specs[name].action_spec
            if (
                cont.shape != (len(ids), a.continuous_size)
                or disc.shape != (len(ids), a.discrete_size)
                or (batch.agent_id is not ids and not np.array_equal(batch.agent_id, ids))
            ):
                raise SpecError(
                    f"GameSession.step(): the actions of behavior '{name}' do not match its {len(ids)} deciding "
                    f"agents (continuous {cont.shape}, discrete {disc.shape}, {len(batch.agent_id)} agent ids)."
                )
            if flight.singles:
                lo, hi = flight.singles_start, flight.singles_start + len(flight.singles)
                # Iterating a 2-D array yields its rows (views) at C speed.
                for single, c_row, d_row in zip(flight.singles, cont[lo:hi], disc[lo:hi], strict=True):
                    if single.state != _IN_FLIGHT:
                        continue
                    single.state = _DONE
                    info = agents.get(single.agent_id)
                    if info is not None and info.waiting is single:
                        info.waiting = None
                    fut = single.future
                    if fut is not None and not fut.done():
                        fut.set_result(AgentAction(c_row, d_row))
            for sink in flight.sinks:
                entry = sink.entry
                if entry.state != _IN_FLIGHT:
                    continue
                entry.state = _DONE
                assert isinstance(entry, _Batch)
                lo, hi = sink.start, sink.start + sink.size
                for aid in entry.agent_ids.tolist():
                    info = agents.get(aid)
                    if info is not None and info.waiting is entry:
                        info.waiting = None
                if entry.rows is None and not entry.left.any():
                    result = ActionBatch(cont[lo:hi], disc[lo:hi], entry.agent_ids)
                else:
                    full = self._empty_actions(self._specs[name], entry)
                    rows = entry.rows if entry.rows is not None else np.arange(len(entry.agent_ids))
                    full.continuous[rows] = cont[lo:hi]
                    full.discrete[rows] = disc[lo:hi]
                    if entry.left.any():
                        full.continuous[entry.left] = 0.0
                        full.discrete[entry.left] = 0
                    result = full
                if not entry.future.done():
                    entry.future.set_result(result)


def _who(agent_id: int | None) -> str:
    return "decide_batch()" if agent_id is None else f"agent {agent_id}"


def _cat(parts: list[Any], dtype: Any) -> Any:
    return parts[0] if len(parts) == 1 else np.concatenate(parts).astype(dtype, copy=False)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
