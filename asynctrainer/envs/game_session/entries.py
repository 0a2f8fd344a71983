"""What a GameSession remembers: queued calls (entries), joined agents, leaves and in-flight batches."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import ActionBatch

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: The life of an entry: queued, handed to the env loop, answered (or dropped).
QUEUED, IN_FLIGHT, DONE = 0, 1, 2


class AgentAction(NamedTuple):
    """One agent's action: ``continuous`` float32 ``[continuous_size]`` in [-1, 1] and
    ``discrete`` int32 ``[n_branches]`` (either may be empty, as the action spec says)."""

    continuous: F32
    discrete: I32


class Single:
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
        self.state = QUEUED

    @property
    def decision_rows(self) -> int:
        return 0 if self.ended or self.left or self.state == DONE else 1

    def who(self) -> str:
        return f"agent {self.agent_id}"


class Batch:
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
        self.state = QUEUED

    @property
    def decision_rows(self) -> int:
        return self.n_decide

    def who(self) -> str:
        return f"{len(self.agent_ids)} agents"


Entry = Single | Batch


def entry_obs(entry: Entry, row: int) -> tuple[F32, ...]:
    """The observation of row ``row`` of ``entry`` (a ``Single`` has one row)."""
    if isinstance(entry, Single):
        return entry.obs
    return tuple(o[row] for o in entry.obs)


class Agent:
    """What the session remembers about one joined agent."""

    __slots__ = ("behavior", "in_episode", "last", "row", "waiting")

    def __init__(self, behavior: str) -> None:
        self.behavior = behavior
        self.waiting: Entry | None = None  # the queued or in-flight decision of this agent
        self.last: Entry | None = None  # where its newest observation is
        self.row = 0  # its row in ``last`` / ``waiting`` when that is a Batch
        self.in_episode = False  # it has acted since its last episode end


class Leave(NamedTuple):
    """An agent that left after acting: its episode ends with this interrupted terminal row."""

    behavior: str
    agent_id: int
    obs: tuple[F32, ...]
    reward: float


class Sink(NamedTuple):
    """Where the actions of rows ``[start, start + size)`` of a step's batch go."""

    entry: Batch
    start: int
    size: int


class InFlight(NamedTuple):
    """One behavior's batch handed to the env loop: ``decide_batch`` entries (with their rows)
    first, then ``decide`` entries, one row each from ``singles_start`` on."""

    ids: I64
    sinks: list[Sink]
    singles: list[Single]
    singles_start: int

    def entries(self) -> list[Entry]:
        return [*(sink.entry for sink in self.sinks), *self.singles]
