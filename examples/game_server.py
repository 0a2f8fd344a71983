"""A live asyncio game server that trains its agents while it plays.

The game: a line of ``SIZE`` cells. Every connected client owns one agent; each episode the
agent starts on a random cell and must reach a goal cell (chosen by the client, or at
random). Each tick the agent moves left, stays or moves right: ``-0.01`` per tick, ``+1``
on reaching the goal (the episode terminates), and the episode is cut after ``MAX_TICKS``
ticks (truncated). The observation is ``[(goal - pos) / (SIZE - 1), pos / (SIZE - 1)]``.
A random policy averages a return of about 0.26, the optimal one 0.97.

The server runs its own tick loop (``--tick-hz``, 0 = as fast as it can). On each tick it
asks the policy for all connected agents at once with ``GameSession.decide_batch``, moves
them, reports ended episodes with ``GameSession.decide(..., terminated/truncated=True)``,
and sends every client its agent's state. A :class:`~asynctrainer.runtime.runner.Runner`
trains PPO on the same loop (``async with Runner(settings, session)``). A client that
leaves or disconnects ends its agent's episode as interrupted (``session.leave``). When
training reaches ``--max-steps`` the server keeps playing with the trained policy through
:class:`~asynctrainer.serving.server.PolicyServer` (inference only) until ``--duration`` ends.

Protocol: newline-delimited JSON over TCP on 127.0.0.1.

====================================  =======================================================
client → server                       server → client
====================================  =======================================================
``{"type": "join"}``                  ``{"type": "welcome", "agent": id, "size": 11, ...}``
(every tick, nothing to send)         ``{"type": "state", "tick": k, "pos": p, "goal": g,
                                      "action": a, "reward": r, "done": bool, "return": R}``
``{"type": "ack", "tick": k}``        (optional; the server tracks how far behind clients are)
``{"type": "goal", "cell": c}``       (optional; the goal of the agent's next episode)
``{"type": "leave"}``                 ``{"type": "bye", "agent": id}``; the client may join again
disconnect                            the agent leaves
(anything else)                       ``{"type": "error", "message": "..."}``
====================================  =======================================================

The server refuses what it cannot use, with an ``error`` message, and keeps the connection:
a line that is not a JSON object with a known ``type``, fields of the wrong type (``tick`` is
an int >= 0; ``cell`` an int in ``[0, SIZE)``, not a bool), a ``goal`` before ``join``. It
sends an ``error`` and closes the connection when a line is longer than ``MAX_LINE`` bytes,
when a connection that has not joined sends no complete line for ``idle_timeout`` seconds or
a joined one begins a line and does not end it within that time (a joined client may stay
silent: acks are optional), and when ``max_connections`` are open
already ("server full"). When the process runs out of file descriptors, asyncio's failing
``accept()`` is logged once (then at most once a minute, with a count), not once per attempt.

Run it::

    python examples/game_server.py --port 7777 --max-steps 20000 --duration 120
    python examples/game_client.py --port 7777 --clients 50 --duration 60

or all in one process (the server starts ``--clients`` scripted clients itself)::

    python examples/game_server.py --clients 50 --max-steps 20000

It prints the mean return as it trains, and at the end the tick-interval jitter: how far
each tick period was from the target (p50/p99/max, in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asynctrainer.app import Runner
from asynctrainer.envs.game_session import GameSession
from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import EnvError
from asynctrainer.runtime import runner as runtime_runner
from asynctrainer.serving.server import PolicyServer
from asynctrainer.settings import RunSettings, run_settings_from_dict

BEHAVIOR = "LineWalker"
SIZE = 11
MAX_TICKS = 20
GOAL_REWARD = 1.0
TIME_PENALTY = 0.01
SPEC = BehaviorSpec((ObservationSpec((2,), "obs_0"),), ActionSpec.create_discrete((3,)))
#: Drop a client whose unsent data exceeds this (it stopped reading): a live server never waits.
MAX_CLIENT_BACKLOG = 256 * 1024
#: The longest line a client may send, newline included (a longer one closes the connection).
MAX_LINE = 64 * 1024
#: Seconds a connection that has not joined may go without sending a complete line.
IDLE_TIMEOUT = 10.0
#: Tick periods kept for the report's percentiles (the newest ones; count and max cover the whole run).
PERIOD_WINDOW = 65_536
MESSAGE_TYPES = ("ack", "goal", "join", "leave")
PHASES = ("first update", "training", "serving")

logger = logging.getLogger("game_server")


def default_max_connections() -> int:
    """At most 1024 connections, and 64 file descriptors fewer than the process may open."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # not a POSIX system
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(1, min(1024, int(soft) - 64))


def parse_message(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """One client line as a checked message, or ``(None, why it was refused)``.

    Checked: a JSON object whose ``type`` is one of :data:`MESSAGE_TYPES`; ``ack`` has an int
    ``tick`` >= 0 (optional), ``goal`` an int ``cell`` in ``[0, SIZE)``. Bools are not ints here.
    """
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deeply
        return None, f"not a protocol message (not JSON): {line[:80]!r}"
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None, f'not a protocol message (a JSON object with a "type" string expected): {line[:80]!r}'
    kind = message["type"]
    if kind not in MESSAGE_TYPES:
        return None, f"unknown message type {kind[:40]!r}; known types: {', '.join(MESSAGE_TYPES)}"
    if kind == "ack" and "tick" in message and not _is_int(message["tick"], 0, None):
        return None, f'"tick" of an ack must be an int >= 0, got {_short(message["tick"])}'
    if kind == "goal" and not _is_int(message.get("cell"), 0, SIZE):
        return None, f'"cell" of a goal must be an int in [0, {SIZE}), got {_short(message.get("cell"))}'
    return message, ""


def _is_int(value: Any, lo: int, hi: int | None) -> bool:
    return type(value) is int and value >= lo and (hi is None or value < hi)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def default_settings(max_steps: int = 30_000, **overrides: Any) -> RunSettings:
    """PPO settings that learn LineWalker in a few thousand steps."""
    behavior: dict[str, Any] = {
        "trainer_type": "ppo",
        "hyperparameters": {
            "batch_size": 128,
            "buffer_size": 1024,
            "learning_rate": 3.0e-3,
            "learning_rate_schedule": "constant",
            "beta": 5.0e-3,
            "num_epoch": 3,
        },
        "network_settings": {"hidden_units": 32, "num_layers": 1},
        "reward_signals": {"extrinsic": {"gamma": 0.95, "strength": 1.0}},
        "time_horizon": 32,
        "max_steps": max_steps,
        "summary_freq": 2000,
        **overrides,
    }
    return run_settings_from_dict({"behaviors": {BEHAVIOR: behavior}})


class LineWorld:
    """The game state of every agent, vectorised over agents."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.pos: dict[int, int] = {}
        self.goal: dict[int, int] = {}
        self.ticks: dict[int, int] = {}
        self.returns: dict[int, float] = {}
        self.next_goal: dict[int, int] = {}

    def spawn(self, agent: int) -> None:
        pos = int(self.rng.integers(0, SIZE))
        goal = self.next_goal.pop(agent, None)
        if goal is None or goal == pos:
            goal = int((pos + self.rng.integers(1, SIZE)) % SIZE)
        self.pos[agent], self.goal[agent], self.ticks[agent], self.returns[agent] = pos, goal, 0, 0.0

    def remove(self, agent: int) -> None:
        for table in (self.pos, self.goal, self.ticks, self.returns, self.next_goal):
            table.pop(agent, None)

    def obs(self, agents: list[int]) -> np.ndarray:
        pos = np.fromiter((self.pos[a] for a in agents), np.float32, len(agents))
        goal = np.fromiter((self.goal[a] for a in agents), np.float32, len(agents))
        return np.stack([(goal - pos) / (SIZE - 1), pos / (SIZE - 1)], axis=1)

    def move(self, agent: int, action: int) -> tuple[float, bool, bool]:
        """Apply one action: (reward, terminated, truncated)."""
        self.pos[agent] = min(SIZE - 1, max(0, self.pos[agent] + action - 1))
        self.ticks[agent] += 1
        reached = self.pos[agent] == self.goal[agent]
        reward = GOAL_REWARD if reached else -TIME_PENALTY
        self.returns[agent] += reward
        return reward, reached, not reached and self.ticks[agent] >= MAX_TICKS


@dataclass(eq=False)
class Client:
    writer: asyncio.StreamWriter
    agent: int | None = None
    last_ack: int = -1


class PeriodStats:
    """Tick periods of one phase in bounded memory: count, min and max over the whole run,
    percentiles over the newest ``window`` periods (a ring buffer)."""

    def __init__(self, window: int = PERIOD_WINDOW) -> None:
        self.window = window
        self._ring = np.zeros(window, np.float64)
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self._ring[self.count % self.window] = value
        self.count += 1
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def values(self) -> np.ndarray:
        """The newest ``min(count, window)`` periods (in no particular order)."""
        return self._ring[: min(self.count, self.window)]

    def summary(self, target: float | None = None) -> dict[str, float]:
        """p50/p99 over the window, max and samples over the whole run: of the periods, or of
        ``|period - target|`` when ``target`` is given."""
        if not self.count:
            return {}
        a = self.values()
        top = self.max
        if target is not None:
            a = np.abs(a - target)
            top = max(abs(self.max - target), abs(self.min - target))
        return {
            "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)),
            "max": float(top),
            "samples": float(self.count),
        }


@dataclass
class ServerReport:
    """What a run of the server did."""

    ticks: int = 0
    decisions: int = 0
    episodes: int = 0
    joins: int = 0
    leaves: int = 0
    dropped_clients: int = 0
    #: connections refused because ``max_connections`` were open
    refused_connections: int = 0
    #: connections closed for sending no complete line within ``idle_timeout`` before joining,
    #: or for leaving a line unfinished that long after joining
    idle_timeouts: int = 0
    #: lines refused with an error reply (bad JSON, unknown types, bad fields, over ``MAX_LINE``)
    bad_messages: int = 0
    #: failed ``accept()`` calls for want of file descriptors or memory (EMFILE, ENFILE, ...)
    accept_errors: int = 0
    trained_steps: int = 0
    mean_return: float = float("nan")
    tick_hz: float = 0.0
    tick_period_ms: dict[str, float] = field(default_factory=dict)
    tick_deviation_ms: dict[str, float] = field(default_factory=dict)
    #: |period - target| by phase: "first update" (until the first trained policy is published:
    #: TensorFlow's one-off tracing runs then), "training" (afterwards), "serving" (inference only).
    tick_deviation_by_phase_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    stopped_because: str = ""


class GameServer:
    """The LineWalker server: TCP clients, a tick loop, a GameSession and a Runner on one loop.

    :param settings: the run config (default: :func:`default_settings`).
    :param tick_hz: ticks per second; 0 runs ticks back to back (tests, benchmarks).
    :param reward_window: episodes in the moving mean return.
    :param idle_timeout: seconds a connection that has not joined may go without a complete
        line, and a joined one may leave a line unfinished, before it is closed (None: never).
    :param max_connections: open connections at most; one more gets ``error`` "server full"
        and is closed (default: :func:`default_max_connections`).
    :param period_window: tick periods kept per phase for the report's percentiles.
    :param runner_options: passed to :class:`Runner` (``trainer_factory``, ``results_dir``, ...).
    """

    def __init__(
        self,
        settings: RunSettings | None = None,
        *,
        tick_hz: float = 50.0,
        seed: int = 0,
        reward_window: int = 200,
        max_wait_ms: float = 1.0,
        log_every: float = 5.0,
        idle_timeout: float | None = IDLE_TIMEOUT,
        max_connections: int | None = None,
        period_window: int = PERIOD_WINDOW,
        **runner_options: Any,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_connections = default_max_connections() if max_connections is None else max_connections
        self.settings = settings or default_settings()
        self.tick_hz = tick_hz
        self.seed = seed
        self.world = LineWorld(seed)
        self.session = GameSession({BEHAVIOR: SPEC}, max_wait_ms=max_wait_ms)
        self.decider: GameSession | PolicyServer = self.session
        self.runner_options = {"stats_writers": [], "overflow": "drop_oldest", **runner_options}
        self.runner: runtime_runner.Runner | None = None
        self.clients: dict[int, Client] = {}  # by agent id
        self.joining: list[int] = []
        self.episode_returns: deque[float] = deque(maxlen=reward_window)
        self.report = ServerReport(tick_hz=tick_hz)
        self.log_every = log_every
        self._next_agent = 0
        self._server: asyncio.Server | None = None
        #: tick periods in seconds by phase, in bounded memory (the first tick is not counted)
        self.periods = {phase: PeriodStats(period_window) for phase in PHASES}
        self._ticks_timed = 0
        self.connections: set[Client] = set()
        self._previous_handler: Any = None
        self._handler_installed = False
        self._accept_logged_at: float | None = None
        self._accept_errors_logged = 0
        self._stop = asyncio.Event()
        self._pending_reward: dict[int, float] = {}  # reward of each agent's last move, reported next tick
        self.port = 0

    # ----- networking ----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:``port`` (0 = any free port); return the port."""
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self._handler_installed = True
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port, limit=MAX_LINE)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for client in list(self.connections):
                client.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._handler_installed:
            asyncio.get_running_loop().set_exception_handler(self._previous_handler)
            self._handler_installed = False

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Log a failing ``accept()`` (out of file descriptors) once, then at most once a minute.

        asyncio retries ``accept()`` every second and reports each failure with a traceback;
        anything else goes to the handler that was there before.
        """
        exc = context.get("exception")
        resource_errors = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
        if isinstance(exc, OSError) and exc.errno in resource_errors and "accept" in str(context.get("message")):
            self.report.accept_errors += 1
            now = time.monotonic()
            if self._accept_logged_at is None or now - self._accept_logged_at >= 60.0:
                more = self.report.accept_errors - self._accept_errors_logged
                logger.warning(
                    "accept() failed: %s (%d connections open, max_connections %d); new connections wait "
                    "until descriptors free up. Logged %s.",
                    exc.strerror or exc,
                    len(self.connections),
                    self.max_connections,
                    "once; again at most once a minute" if self._accept_logged_at is None else f"{more} more times",
                )
                self._accept_logged_at = now
                self._accept_errors_logged = self.report.accept_errors
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _send(self, client: Client, message: dict[str, Any]) -> None:
        writer = client.writer
        if writer.is_closing():
            return
        writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        if writer.transport.get_write_buffer_size() > MAX_CLIENT_BACKLOG:
            self.report.dropped_clients += 1
            self._leave(client)
            writer.close()

    def _error(self, client: Client, message: str) -> None:
        self._send(client, {"type": "error", "message": message})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Client(writer)
        if len(self.connections) >= self.max_connections:
            self.report.refused_connections += 1
            self._error(client, f"server full ({self.max_connections} connections); try again later")
            writer.close()
            return
        self.connections.add(client)
        try:
            await self._serve_client(client, reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug of this server: one client's problem must not reach the loop
            logger.exception("game server: client handler failed; closing that connection")
            self._error(client, "internal server error; closing the connection")
        finally:
            self.connections.discard(client)
            self._leave(client)
            writer.close()

    async def _serve_client(self, client: Client, reader: asyncio.StreamReader) -> None:
        """Read and answer ``client``'s lines until it disconnects or is closed (idle, too long a line)."""
        while True:
            joined = client.agent is not None
            try:
                line = await self._read_line(reader, joined)
            except TimeoutError:
                self.report.idle_timeouts += 1
                why = "a message begun and not finished" if joined else "no complete message"
                after = "" if joined else " without joining"
                self._error(client, f"{why} for {self.idle_timeout} s{after}; closing the connection")
                return
            except ValueError:  # asyncio.LimitOverrunError: no newline within MAX_LINE bytes
                self.report.bad_messages += 1
                self._error(client, f"a line longer than {MAX_LINE} bytes; closing the connection")
                return
            if not line:
                return
            message, why = parse_message(line)
            if message is None:
                self.report.bad_messages += 1
                self._error(client, why)
                continue
            self._on_message(client, message)

    async def _read_line(self, reader: asyncio.StreamReader, joined: bool) -> bytes:
        """A client's next line (``b""`` when it disconnected).

        A client that has not joined must send a whole line within ``idle_timeout``. A joined
        client may stay silent as long as it likes (acks are optional), but a line it begins
        must end within ``idle_timeout``: half a line would otherwise hold its slot for ever.

        :raises TimeoutError: the line did not come, or did not end, in time.
        """
        head = b""
        if joined:
            head = await reader.read(1)  # waits while the client is silent
            if head in (b"", b"\n"):
                return head
        return head + await asyncio.wait_for(reader.readline(), self.idle_timeout)

    def _on_message(self, client: Client, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "join" and client.agent is None:
            client.agent = self._next_agent
            self._next_agent += 1
            self.clients[client.agent] = client
            self.joining.append(client.agent)
            self.report.joins += 1
            self._send(client, {"type": "welcome", "agent": client.agent, "size": SIZE, "max_ticks": MAX_TICKS})
        elif kind == "join":
            self._error(client, f"already joined as agent {client.agent}")
        elif kind == "leave":
            if client.agent is None:
                self._error(client, "not joined; send join first")
            else:
                agent = self._leave(client)
                self._send(client, {"type": "bye", "agent": agent})
        elif kind == "goal":
            if client.agent is None:
                self._error(client, "not joined; send join first")
            else:
                self.world.next_goal[client.agent] = message["cell"]
        elif kind == "ack":
            client.last_ack = message.get("tick", -1)

    def _leave(self, client: Client) -> int | None:
        agent, client.agent = client.agent, None
        if agent is None:
            return None
        self.clients.pop(agent, None)
        if agent in self.joining:
            self.joining.remove(agent)
        self.world.remove(agent)
        self._pending_reward.pop(agent, None)
        if self.decider.leave(agent):
            self.report.leaves += 1
        return agent

    # ----- the game ------------------------------------------------------------------------------

    async def tick(self) -> None:
        """One game tick: decide for every agent at once, move them, report ends, send states."""
        for agent in self.joining:
            self.world.spawn(agent)
        self.joining.clear()
        agents = [a for a in self.clients if a in self.world.pos]
        if not agents:
            await asyncio.sleep(0.001)
            return
        obs = self.world.obs(agents)
        rewards = np.fromiter((self._pending_reward.pop(a, 0.0) for a in agents), np.float32, len(agents))
        actions = await self.decider.decide_batch(BEHAVIOR, agents, obs, rewards)
        tick = self.report.ticks
        self.report.decisions += len(agents)
        for i, agent in enumerate(agents):
            client = self.clients.get(agent)
            if client is None or agent not in self.world.pos:
                continue  # left while the policy was deciding
            action = int(actions.discrete[i, 0])
            reward, terminated, truncated = self.world.move(agent, action)
            state: dict[str, Any] = {
                "type": "state",
                "tick": tick,
                "pos": self.world.pos[agent],
                "goal": self.world.goal[agent],
                "action": action,
                "reward": reward,
                "done": terminated or truncated,
                "return": None,
            }
            if terminated or truncated:
                final = self.world.obs([agent])[0]
                await self.decider.decide(agent, final, reward, terminated=terminated, truncated=truncated)
                ret = self.world.returns[agent]
                state["return"] = ret
                self.episode_returns.append(ret)
                self.report.episodes += 1
                self.world.spawn(agent)
            else:
                self._pending_reward[agent] = reward
            self._send(client, state)
        self.report.ticks += 1

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")

    def stop(self) -> None:
        self._stop.set()

    async def _switch_to_inference(self) -> None:
        """Training ended (the Runner closed the session): keep playing with the trained policy."""
        assert self.runner is not None
        snapshot = self.runner.slots[BEHAVIOR].latest()
        server = PolicyServer(snapshot, max_wait_ms=1.0, seed=self.seed)
        await server.start()
        self.decider = server
        self._pending_reward.clear()
        for agent in list(self.world.pos):
            self.world.spawn(agent)  # the trained policy starts fresh episodes

    def _phase(self) -> str:
        if self.decider is not self.session:
            return "serving"
        slots = self.runner.slots if self.runner is not None else {}
        return "training" if BEHAVIOR in slots and slots[BEHAVIOR].version >= 1 else "first update"

    async def _tick_loop(self, deadline: float | None, until: Any) -> str:
        period = 1.0 / self.tick_hz if self.tick_hz > 0 else 0.0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        last = time.perf_counter()
        last_log = last
        while not self._stop.is_set():
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                return "duration"
            phase = self._phase()  # of the tick's start: a stall belongs to the phase it began in
            try:
                await self.tick()
            except EnvError:
                if not self.session.closed or self.decider is not self.session:
                    raise
                await self._switch_to_inference()
                if deadline is None:
                    return "max_steps"
            stamp = time.perf_counter()
            if self._ticks_timed:  # the first period includes start-up
                self.periods[phase].add(stamp - last)
            self._ticks_timed += 1
            last = stamp
            if until is not None and until(self):
                return "goal"
            if self.log_every and stamp - last_log >= self.log_every:
                last_log = stamp
                steps = self.runner.trainers[BEHAVIOR].step if self.runner and self.runner.trainers else 0
                mode = "training" if self.decider is self.session else "serving"
                print(
                    f"[server] tick {self.report.ticks}  agents {len(self.clients)}  trained steps {steps}  "
                    f"mean return {self.mean_return:.3f}  ({mode})",
                    flush=True,
                )
            if period:
                next_at += period
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    next_at = loop.time()  # late: do not try to catch up with a burst
            else:
                await asyncio.sleep(0)
        return "stopped"

    async def run(self, *, duration: float | None = None, until: Any = None) -> ServerReport:
        """Train and play until training ends (or ``duration`` seconds, or ``until(server)`` is true)."""
        deadline = None if duration is None else time.perf_counter() + duration
        async with Runner(self.settings, self.session, seed=self.seed, **self.runner_options) as runner:
            self.runner = runner
            why = await self._tick_loop(deadline, until)
            self.report.trained_steps = runner.trainers[BEHAVIOR].step
        if isinstance(self.decider, PolicyServer):
            await self.decider.aclose()
        self.report.stopped_because = why
        self.report.mean_return = self.mean_return
        self._finish_report()
        return self.report

    def _finish_report(self) -> None:
        whole = PeriodStats(sum(min(p.count, p.window) for p in self.periods.values()) or 1)
        for stats in self.periods.values():
            for value in stats.values():
                whole.add(float(value))
        # count, min and max over the whole run, though the window keeps only the newest periods
        counted = [p for p in self.periods.values() if p.count]
        if counted:
            whole.count = sum(p.count for p in counted)
            whole.min, whole.max = min(p.min for p in counted), max(p.max for p in counted)
        self.report.tick_period_ms = _in_ms(whole.summary())
        if self.tick_hz > 0:
            target = 1.0 / self.tick_hz
            self.report.tick_deviation_ms = _in_ms(whole.summary(target))
            for phase, stats in self.periods.items():
                if stats.count:
                    self.report.tick_deviation_by_phase_ms[phase] = _in_ms(stats.summary(target))


def _in_ms(summary: dict[str, float]) -> dict[str, float]:
    return {k: v * 1000.0 if k != "samples" else v for k, v in summary.items()}


def print_report(report: ServerReport) -> None:
    print(
        f"ticks {report.ticks}, decisions {report.decisions}, episodes {report.episodes}, "
        f"joins {report.joins}, leaves {report.leaves}, dropped {report.dropped_clients}, "
        f"trained steps {report.trained_steps}, mean return {report.mean_return:.3f} "
        f"(stopped: {report.stopped_because})"
    )
    p = report.tick_period_ms
    if p:
        print(f"tick period ms: p50 {p['p50']:.3f}  p99 {p['p99']:.3f}  max {p['max']:.3f}")
    rows = {"whole run": report.tick_deviation_ms, **report.tick_deviation_by_phase_ms}
    if report.tick_deviation_ms:
        print(f"tick jitter, |period - {1000.0 / report.tick_hz:.1f} ms| in ms:")
        print(f"  {'phase':<14}{'ticks':>7}{'p50':>9}{'p99':>9}{'max':>9}")
        for phase, d in rows.items():
            print(f"  {phase:<14}{int(d['samples']):>7}{d['p50']:>9.3f}{d['p99']:>9.3f}{d['max']:>9.3f}")


async def main(argv: list[str] | None = None) -> ServerReport:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--max-steps", type=int, default=30_000, help="agent steps to train for")
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until trained)")
    parser.add_argument("--tick-hz", type=float, default=50.0, help="ticks per second (0 = as fast as possible)")
    parser.add_argument("--clients", type=int, default=0, help="scripted clients to start in this process")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    server = GameServer(default_settings(args.max_steps), tick_hz=args.tick_hz, seed=args.seed)
    port = await server.start(args.port)
    print(f"[server] listening on 127.0.0.1:{port}", flush=True)
    swarm_task = None
    if args.clients:
        from asynctrainer.testing.game_clients import run_swarm

        swarm_task = asyncio.create_task(
            run_swarm("127.0.0.1", port, args.clients, duration=args.duration or 3600.0, seed=args.seed)
        )
    try:
        report = await server.run(duration=args.duration)
    finally:
        if swarm_task is not None:
            swarm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await swarm_task
        await server.close()
    print_report(report)
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
