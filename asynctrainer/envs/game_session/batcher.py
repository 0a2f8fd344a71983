"""The micro-batcher of a GameSession: queued calls in, one ``StepBatch`` per behavior out, actions back.

A batch closes as soon as ``max_batch`` decisions are queued, or every joined agent has a
decision queued, or ``max_wait`` seconds passed since the oldest queued item arrived.
Everything here runs on the caller's loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.game_session.entries import (
    DONE,
    F32,
    I64,
    IN_FLIGHT,
    QUEUED,
    Agent,
    AgentAction,
    B,
    Batch,
    Entry,
    InFlight,
    Leave,
    Single,
    Sink,
)
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, DecisionSteps, StepBatch, TerminalSteps
from asynctrainer.errors import SpecError


class MicroBatcher:
    """The queue of a session's calls, the batches handed to the env loop, and their answers.

    :param agents: the session's joined agents (shared, read here: who is there to wait for,
        and whose pending decision an answer clears).
    """

    def __init__(
        self, specs: Mapping[str, BehaviorSpec], agents: Mapping[int, Agent], *, max_batch: int, max_wait: float
    ) -> None:
        self.specs = specs
        self.agents = agents
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._only = next(iter(specs)) if len(specs) == 1 else None
        self._empty_terminal = {name: TerminalSteps.empty(spec) for name, spec in specs.items()}
        self.queue: deque[Entry] = deque()
        self.leaves: list[Leave] = []
        #: decisions queued and not yet handed to the env loop
        self.queued = 0
        self._first_at: float | None = None  # loop time when the oldest queued item arrived
        self.in_flight: dict[str, InFlight] = {}
        #: entries taken off the queue by the collect in progress (so closing fails them too)
        self._taken: list[Entry] = []
        self._waiter: asyncio.Future[None] | None = None
        self._wait_for_any = True
        self.closed = False

    # ----- queueing ----------------------------------------------------------------------------

    def push(self, entry: Entry) -> None:
        """Queue a call (its decision rows count towards the batch)."""
        self.queued += entry.decision_rows
        self.queue.append(entry)
        self._note_arrival()
        self.wake()

    def push_leave(self, leave: Leave) -> None:
        self.leaves.append(leave)
        self._note_arrival()
        self.wake()

    def unqueue_row(self, entry: Entry) -> None:
        """One decision row of a queued ``entry`` will not be acted on (its agent left or gave up)."""
        self.queued -= 1
        if isinstance(entry, Batch):
            entry.n_decide -= 1

    def _note_arrival(self) -> None:
        if self._first_at is None:
            self._first_at = asyncio.get_running_loop().time()

    def ready(self) -> bool:
        """Whether the queued items make a batch now."""
        return self.queued >= self.max_batch or self.queued >= len(self.agents)

    def wake(self) -> None:
        """Wake the env loop's :meth:`wait` if it waits for any item, or when a batch is ready."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (self._wait_for_any or self.closed or self.ready()):
            waiter.set_result(None)

    async def wait(self) -> None:
        """Return when a batch should be collected (or the batcher was closed)."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            timeout: float | None = None
            if self.queue or self.leaves:
                if self.ready():
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

    # ----- the env loop's side -----------------------------------------------------------------

    def requeue(self) -> None:
        """Queue again, first, the decisions a previous env loop collected and never answered."""
        requeue: list[Entry] = []
        for flight in self.in_flight.values():
            for entry in flight.entries():
                if entry.state == IN_FLIGHT:
                    entry.state = QUEUED
                    if isinstance(entry, Batch):
                        entry.n_decide = int((~entry.ended & ~entry.left).sum())
                    self.queued += entry.decision_rows
                    requeue.append(entry)
        self.in_flight = {}
        self.queue.extendleft(reversed(requeue))
        if requeue:
            self._note_arrival()

    def collect(self) -> tuple[dict[str, StepBatch], int]:
        """Turn what is queued (up to ``max_batch`` decisions) into one StepBatch per behavior.

        :returns: the batches and the number of decisions in them.
        """
        queue = self.queue
        taken = self._taken = []
        rows = 0
        while queue:
            k = queue[0].decision_rows
            if rows and rows + k > self.max_batch:
                break
            taken.append(queue.popleft())
            rows += k
        self.queued -= rows
        leaves, self.leaves = self.leaves, []
        self._first_at = asyncio.get_running_loop().time() if queue else None

        by_behavior: dict[str, list[Entry]] = {}
        if self._only is not None:
            by_behavior[self._only] = taken
        else:
            for entry in taken:
                by_behavior.setdefault(entry.behavior, []).append(entry)
        leaves_by: dict[str, list[Leave]] = {}
        for leave in leaves:
            leaves_by.setdefault(leave.behavior, []).append(leave)
        out: dict[str, StepBatch] = {}
        for name, spec in self.specs.items():
            entries = by_behavior.get(name, [])
            gone = leaves_by.get(name, [])
            if entries or gone:
                out[name] = self._build(name, spec, entries, gone)
        self._taken = []
        return out, rows

    def _build(self, name: str, spec: BehaviorSpec, entries: list[Entry], gone: list[Leave]) -> StepBatch:
        n_obs = len(spec.observation_specs)
        # Decision rows: decide_batch() parts first (each a sink), then decide() calls.
        d_obs: list[list[F32]] = [[] for _ in range(n_obs)]
        d_rew: list[F32] = []
        d_ids: list[I64] = []
        d_mask: list[B | None] = []
        sinks: list[Sink] = []
        singles: list[Single] = []
        # Terminal rows: decide_batch() parts, then single rows (leaves and decide() episode ends).
        t_obs: list[list[F32]] = [[] for _ in range(n_obs)]
        t_rew: list[F32] = []
        t_ids: list[I64] = []
        t_int: list[B] = []
        t_single: list[tuple[tuple[F32, ...], float, int, bool]] = [
            (leave.obs, leave.reward, leave.agent_id, True) for leave in gone
        ]
        n_dec = 0
        for entry in entries:
            if entry.state == DONE:
                continue  # superseded while queued
            if isinstance(entry, Single):
                if entry.ended or entry.left:
                    t_single.append((entry.obs, entry.reward, entry.agent_id, entry.left or entry.interrupted))
                    entry.state = DONE
                else:
                    entry.state = IN_FLIGHT
                    singles.append(entry)
                continue
            term_rows = entry.ended | entry.left
            has_terminal = bool(term_rows.any())
            if has_terminal:
                idx = np.flatnonzero(term_rows)
                for i in range(n_obs):
                    t_obs[i].append(entry.obs[i][idx])
                t_rew.append(entry.rewards[idx])
                t_ids.append(entry.agent_ids[idx])
                t_int.append(entry.interrupted[idx] | entry.left[idx])
            if entry.n_decide == 0:
                entry.state = DONE
                if not entry.future.done():
                    entry.future.set_result(empty_actions(spec, entry.agent_ids))
                continue
            entry.rows = np.flatnonzero(~term_rows) if has_terminal else None
            sel: Any = slice(None) if entry.rows is None else entry.rows
            for i in range(n_obs):
                d_obs[i].append(entry.obs[i][sel])
            d_rew.append(entry.rewards[sel])
            d_ids.append(entry.agent_ids[sel])
            d_mask.append(None if entry.mask is None else entry.mask[sel])
            entry.state = IN_FLIGHT
            sinks.append(Sink(entry, n_dec, len(d_ids[-1])))
            n_dec += len(d_ids[-1])
        singles_start = n_dec
        if singles:
            k = len(singles)
            for i in range(n_obs):
                d_obs[i].append(np.stack([e.obs[i] for e in singles]))
            d_rew.append(np.fromiter((e.reward for e in singles), np.float32, k))
            d_ids.append(np.fromiter((e.agent_id for e in singles), np.int64, k))
            d_mask.append(_stack_masks(spec, [e.mask for e in singles]))
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
            if any(m is not None for m in d_mask):
                mask = np.concatenate(
                    [
                        np.zeros((len(i), spec.action_spec.mask_size), bool) if m is None else m
                        for m, i in zip(d_mask, d_ids, strict=True)
                    ]
                )
            decision = DecisionSteps([_cat(parts, np.float32) for parts in d_obs], _cat(d_rew, np.float32), ids, mask)
            self.in_flight[name] = InFlight(ids, sinks, singles, singles_start)
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

    def deliver(self, actions: Mapping[str, ActionBatch]) -> None:
        """Resolve the decisions of the last batch with the env loop's actions.

        All or nothing: every behavior's actions are checked first, and when one does not fit
        its batch, nothing is answered and the batch stays in flight (so :meth:`close` still
        fails its decisions, and a new env loop's ``reset`` queues them again).

        :raises SpecError: actions missing, for a behavior with no batch, or of other shapes or ids.
        """
        in_flight = self.in_flight
        extra = set(actions) - set(in_flight)
        if extra:
            raise SpecError(f"GameSession.step() got actions for {sorted(extra)}, which had no agents deciding.")
        checked: list[tuple[str, InFlight, F32, npt.NDArray[np.int32]]] = []
        for name, flight in in_flight.items():
            ids = flight.ids
            batch = actions.get(name)
            if batch is None:
                raise SpecError(f"GameSession.step() got no actions for behavior '{name}' ({len(ids)} agents wait).")
            a = self.specs[name].action_spec
            try:
                cont = np.asarray(batch.continuous, np.float32)
                disc = np.asarray(batch.discrete, np.int32)
                batch_ids = np.asarray(batch.agent_id)
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecError(f"GameSession.step(): the actions of behavior '{name}' are not arrays: {exc}") from None
            if cont.ndim == 1 and not a.continuous_size:
                cont = cont.reshape(len(ids), 0) if cont.size == 0 else cont
            if (
                cont.shape != (len(ids), a.continuous_size)
                or disc.shape != (len(ids), a.discrete_size)
                or (batch.agent_id is not ids and not np.array_equal(batch_ids, ids))
            ):
                raise SpecError(
                    f"GameSession.step(): the actions of behavior '{name}' do not match its {len(ids)} deciding "
                    f"agents (continuous {cont.shape}, discrete {disc.shape}, {batch_ids.size} agent ids); "
                    f"expected continuous {(len(ids), a.continuous_size)}, discrete {(len(ids), a.discrete_size)} "
                    "and the batch's agent ids in order."
                )
            checked.append((name, flight, cont, disc))
        self.in_flight = {}
        agents = self.agents
        for name, flight, cont, disc in checked:
            lo, hi = flight.singles_start, flight.singles_start + len(flight.singles)
            # Iterating a 2-D array yields its rows (views) at C speed.
            for single, c_row, d_row in zip(flight.singles, cont[lo:hi], disc[lo:hi], strict=True):
                if single.state != IN_FLIGHT:
                    continue
                single.state = DONE
                info = agents.get(single.agent_id)
                if info is not None and info.waiting is single:
                    info.waiting = None
                fut = single.future
                if fut is not None and not fut.done():
                    fut.set_result(AgentAction(c_row, d_row))
            for sink in flight.sinks:
                entry = sink.entry
                if entry.state != IN_FLIGHT:
                    continue
                entry.state = DONE
                for aid in entry.agent_ids.tolist():
                    info = agents.get(aid)
                    if info is not None and info.waiting is entry:
                        info.waiting = None
                part = slice(sink.start, sink.start + sink.size)
                if entry.rows is None and not entry.left.any():
                    result = ActionBatch(cont[part], disc[part], entry.agent_ids)
                else:
                    result = empty_actions(self.specs[name], entry.agent_ids)
                    rows = entry.rows if entry.rows is not None else np.arange(len(entry.agent_ids))
                    result.continuous[rows] = cont[part]
                    result.discrete[rows] = disc[part]
                    result.continuous[entry.left] = 0.0
                    result.discrete[entry.left] = 0
                if not entry.future.done():
                    entry.future.set_result(result)

    def drop_in_flight(self, name: str) -> list[Entry]:
        """Take behavior ``name``'s batch out of flight unanswered: its entries (now done, their
        agents no longer waiting) are returned for the caller to fail; other behaviors' batches
        stay in flight."""
        flight = self.in_flight.pop(name, None)
        if flight is None:
            return []
        dropped: list[Entry] = []
        for entry in flight.entries():
            if entry.state != IN_FLIGHT:
                continue
            entry.state = DONE
            ids = [entry.agent_id] if isinstance(entry, Single) else entry.agent_ids.tolist()
            for aid in ids:
                info = self.agents.get(aid)
                if info is not None and info.waiting is entry:
                    info.waiting = None
            dropped.append(entry)
        return dropped

    def close(self) -> list[Entry]:
        """Stop batching: return every entry not answered yet (queued, being collected, or in flight)."""
        self.closed = True
        pending: list[Entry] = [*self.queue, *self._taken]
        for flight in self.in_flight.values():
            pending.extend(flight.entries())
        self.queue.clear()
        self._taken = []
        self.in_flight = {}
        self.leaves.clear()
        self.queued = 0
        self.wake()
        return pending


def empty_actions(spec: BehaviorSpec, agent_ids: I64) -> ActionBatch:
    """Zero actions for ``agent_ids`` (rows that need no action)."""
    n = len(agent_ids)
    a = spec.action_spec
    return ActionBatch(
        np.zeros((n, a.continuous_size), np.float32), np.zeros((n, a.discrete_size), np.int32), agent_ids
    )


def _stack_masks(spec: BehaviorSpec, masks: list[B | None]) -> B | None:
    if not any(m is not None for m in masks):
        return None
    full = np.zeros((len(masks), spec.action_spec.mask_size), bool)
    for j, m in enumerate(masks):
        if m is not None:
            full[j] = m
    return full


def _cat(parts: list[Any], dtype: Any) -> Any:
    return parts[0] if len(parts) == 1 else np.concatenate(parts).astype(dtype, copy=False)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
