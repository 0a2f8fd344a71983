"""Scripted game clients and failing envs, for tests of servers that train while they play.

The clients speak the newline-delimited JSON protocol of ``examples/game_server.py``:
``{"type": "join"}`` → ``welcome``; then a ``state`` message per tick (answered with an
``ack``); ``{"type": "goal", "cell": c}`` to pick the next goal; ``{"type": "leave"}`` →
``bye`` (the connection may join again); or a plain disconnect. They only ever connect to
the host and port they are given (use 127.0.0.1), and every helper is bounded in time.

- :class:`GameClient` — one client: ``connect``, ``join``, ``play(ticks)``, ``leave``, ``close``.
- :func:`run_swarm` — ``n`` clients for ``duration`` seconds; a share of them (``churn``) leave
  and rejoin on the same connection, or disconnect and reconnect, at random moments.
  Returns a :class:`SwarmReport`.
- :class:`CrashingEnv` — wraps any :class:`~asynctrainer.envs.base.AsyncEnv` and raises from
  ``step`` after ``crash_after`` steps (error-path tests: what the Runner reports, whether the
  inner env — e.g. a GameSession, whose waiting ``decide()`` calls then fail — is closed).

Fixture recipes (pytest-asyncio, ``asyncio_mode = "auto"``)::

    import pytest
    from asynctrainer.testing.game_clients import run_swarm

    @pytest.fixture
    async def game_server():
        server = GameServer(settings, tick_hz=0)      # examples/game_server.py
        await server.start(0)                          # an ephemeral port on 127.0.0.1
        yield server
        await server.close()

    @pytest.fixture
    async def swarm(game_server):
        task = asyncio.create_task(run_swarm("127.0.0.1", game_server.port, 50, duration=30, churn=0.2))
        yield task
        task.cancel()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, StepBatch

__all__ = ["CrashingEnv", "GameClient", "SwarmReport", "run_swarm"]


#: Episode returns a :class:`SwarmReport` keeps (the newest).
RETURNS_KEPT = 10_000


@dataclass
class SwarmReport:
    """What a swarm of scripted clients saw (summed over clients)."""

    clients: int = 0
    connects: int = 0
    joins: int = 0
    leaves: int = 0
    disconnects: int = 0
    states: int = 0
    episodes: int = 0
    #: the newest episode returns (bounded: a swarm may play for hours)
    returns: deque[float] = field(default_factory=lambda: deque(maxlen=RETURNS_KEPT))
    errors: list[str] = field(default_factory=list)

    def merge(self, other: SwarmReport) -> None:
        for name in ("connects", "joins", "leaves", "disconnects", "states", "episodes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.returns.extend(other.returns)
        self.errors.extend(other.errors)


class GameClient:
    """One scripted client of the game server protocol.

    :param goal_prob: chance per tick to send a ``goal`` request for the next episode.
    :param ack: answer every state with an ``ack``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rng: np.random.Generator | None = None,
        goal_prob: float = 0.02,
        ack: bool = True,
        size: int = 11,
    ) -> None:
        self.host, self.port = host, port
        self.rng = rng or np.random.default_rng()
        self.goal_prob = goal_prob
        self.ack = ack
        self.size = size
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.agent: int | None = None
        self.report = SwarmReport(clients=1)

    async def connect(self, timeout: float = 5.0) -> None:
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        self.report.connects += 1

    async def send(self, message: dict[str, Any]) -> None:
        assert self.writer is not None, "connect() first"
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()

    async def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None at end of stream or after ``timeout`` seconds."""
        assert self.reader is not None, "connect() first"
        try:
            line = await asyncio.wait_for(self.reader.readline(), max(timeout, 0.0))
        except TimeoutError:
            return None
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        return message

    async def _expect(self, kind: str, deadline: float) -> dict[str, Any] | None:
        while (left := deadline - time.perf_counter()) > 0:
            message = await self.receive(left)
            if message is None:
                return None
            if message.get("type") == kind:
                return message
            self._note(message)
        return None

    def _note(self, message: dict[str, Any]) -> None:
        if message.get("type") == "state":
            self.report.states += 1
            if message.get("done"):
                self.report.episodes += 1
                if message.get("return") is not None:
                    self.report.returns.append(float(message["return"]))
        elif message.get("type") == "error":
            self.report.errors.append(str(message.get("message")))

    async def join(self, timeout: float = 5.0) -> int | None:
        await self.send({"type": "join"})
        welcome = await self._expect("welcome", time.perf_counter() + timeout)
        if welcome is not None:
            self.agent = int(welcome["agent"])
            self.report.joins += 1
        return self.agent

    async def leave(self, timeout: float = 5.0) -> None:
        await self.send({"type": "leave"})
        await self._expect("bye", time.perf_counter() + timeout)
        self.agent = None
        self.report.leaves += 1

    async def play(self, ticks: int, *, deadline: float) -> bool:
        """Read ``ticks`` states (acking each); False when the server went away."""
        seen = 0
        while seen < ticks and (left := deadline - time.perf_counter()) > 0:
            message = await self.receive(left)
            if message is None:  # out of time (fine), or the server closed the stream (not fine)
                return time.perf_counter() >= deadline
            self._note(message)
            if message.get("type") != "state":
                continue
            seen += 1
            if self.ack:
                await self.send({"type": "ack", "tick": message["tick"]})
            if self.goal_prob and self.rng.random() < self.goal_prob:
                await self.send({"type": "goal", "cell": int(self.rng.integers(0, self.size))})
        return True

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        self.agent = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self.report.disconnects += 1


async def _one_client(
    host: str, port: int, deadline: float, rng: np.random.Generator, churns: bool, mean_ticks: float
) -> SwarmReport:
    client = GameClient(host, port, rng=rng)
    try:
        await client.connect()
        while time.perf_counter() < deadline:
            if client.writer is None:
                await client.connect()
            if await client.join() is None:
                break
            ticks = int(rng.geometric(1.0 / mean_ticks)) if churns else 1 << 30
            if not await client.play(ticks, deadline=deadline):
                break  # the server closed the connection
            if time.perf_counter() >= deadline:
                break
            if rng.random() < 0.5:
                await client.leave()  # leave and rejoin on the same connection
            else:
                await client.close()  # disconnect, pause, reconnect
                await asyncio.sleep(float(rng.uniform(0.0, 0.05)))
    except (ConnectionError, OSError, TimeoutError) as exc:
        client.report.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await client.close()
    return client.report


async def run_swarm(
    host: str,
    port: int,
    n: int,
    *,
    duration: float,
    churn: float = 0.2,
    mean_ticks: float = 100.0,
    seed: int = 0,
) -> SwarmReport:
    """Run ``n`` scripted clients for ``duration`` seconds and return what they saw.

    :param churn: share of the clients that leave and rejoin (half of the time on the same
        connection with ``leave``, half by disconnecting and reconnecting), after a geometric
        number of ticks of mean ``mean_ticks``. The others stay for the whole run.
    """
    deadline = time.perf_counter() + duration
    seeds = np.random.SeedSequence(seed).spawn(n)
    n_churn = round(churn * n)
    reports = await asyncio.gather(
        *(
            _one_client(host, port, deadline, np.random.default_rng(s), i < n_churn, mean_ticks)
            for i, s in enumerate(seeds)
        )
    )
    total = SwarmReport(clients=n)
    for report in reports:
        total.merge(report)
    return total


class CrashingEnv:
    """An AsyncEnv that forwards to ``inner``; after ``crash_after`` steps, ``step`` raises ``error``.

    ``aclose`` is forwarded (and recorded in ``closed``), so a test can check that the Runner
    closed the env on the way out.
    """

    def __init__(self, inner: Any, crash_after: int, error: BaseException | None = None) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.error = error if error is not None else RuntimeError(f"env crashed after {crash_after} steps")
        self.steps = 0
        self.closed = False

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        specs: Mapping[str, BehaviorSpec] = self.inner.behavior_specs
        return specs

    async def reset(self) -> dict[str, StepBatch]:
        out: dict[str, StepBatch] = await self.inner.reset()
        return out

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        if self.steps >= self.crash_after:
            raise self.error
        out: dict[str, StepBatch] = await self.inner.step(actions)
        self.steps += 1
        return out

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()
