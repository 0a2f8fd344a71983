"""The examples: the game server with TCP clients (fake and real PPO) and the notebook."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from asynctrainer.testing.fakes import fake_trainer_factory
from asynctrainer.testing.game_clients import GameClient, run_swarm

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    module_name = f"asynctrainer_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def game_server() -> ModuleType:
    return load_example("game_server")


async def test_game_server_protocol_with_a_fake_trainer(game_server: ModuleType) -> None:
    """Join, states every tick, goals, bad lines, leave and rejoin, disconnect: all reach the learner."""
    factory = fake_trainer_factory()
    settings = game_server.default_settings(max_steps=10**6, time_horizon=1000)
    server = game_server.GameServer(settings, tick_hz=200, trainer_factory=factory, log_every=0)
    port = await server.start(0)
    stop_at = 0

    async def scenario() -> dict[str, Any]:
        a = GameClient("127.0.0.1", port, goal_prob=0.0)
        b = GameClient("127.0.0.1", port, goal_prob=0.0)
        await a.connect()
        await b.connect()
        agent_a, agent_b = await a.join(), await b.join()
        assert agent_a is not None and agent_b is not None and agent_a != agent_b
        await a.send({"type": "goal", "cell": 3})
        deadline = time.perf_counter() + 10
        assert await a.play(30, deadline=deadline) and await b.play(30, deadline=deadline)
        assert a.writer is not None
        a.writer.write(b"this is not json\n")
        await a.leave()
        rejoined = await a.join()
        assert rejoined is not None and rejoined != agent_a
        assert await a.play(10, deadline=deadline)
        await b.close()  # a plain disconnect
        await a.play(10, deadline=deadline)
        await a.close()
        return {"a": a.report, "b": b.report}

    run = asyncio.create_task(server.run(duration=30, until=lambda s: stop_at))
    seen = await asyncio.wait_for(scenario(), 20)
    await asyncio.sleep(0.05)  # let the server notice the disconnects
    stop_at = 1
    report = await asyncio.wait_for(run, 20)
    await server.close()

    assert seen["a"].errors and "not a protocol message" in seen["a"].errors[0]
    assert seen["a"].joins == 2 and seen["b"].joins == 1
    assert report.joins == 3 and report.leaves == 3 and report.stopped_because == "goal"
    assert server.session.closed
    trainer = factory.made[0]  # type: ignore[attr-defined]
    received = trainer.received
    stats = server.session.stats
    # A leave ends an episode as interrupted unless the agent's episode had just ended (it
    # reached the goal cell on its last tick and had no decision since): then there is nothing
    # to end (tests/envs/test_game_session.py pins both cases down). Which of the three leaves
    # here are which depends on timing.
    assert stats.leaves <= report.leaves
    assert sum(t.interrupted for t in received) >= stats.leaves, "every leave ends an interrupted trajectory"
    # Every action the policy took got its reward: the trajectories hold them all.
    assert sum(len(t) for t in received) == stats.decisions
    assert report.decisions - 2 <= stats.decisions <= report.decisions  # a row may leave before it is acted on
    assert report.episodes == stats.episodes_ended


async def test_the_client_script_runs_against_the_server(game_server: ModuleType) -> None:
    client_script = load_example("game_client")
    factory = fake_trainer_factory()
    server = game_server.GameServer(
        game_server.default_settings(max_steps=10**6), tick_hz=100, trainer_factory=factory, log_every=0
    )
    port = await server.start(0)
    run = asyncio.create_task(server.run(duration=3.0))
    totals = await asyncio.wait_for(
        client_script.main(["--port", str(port), "--clients", "4", "--duration", "1.5", "--quiet"]), 10
    )
    report = await asyncio.wait_for(run, 20)
    await server.close()
    assert totals.states > 20 and totals.joins >= 4
    assert report.decisions >= totals.states


@pytest.mark.learning
async def test_ppo_learns_the_game_with_many_tcp_clients_coming_and_going(game_server: ModuleType) -> None:
    """60 TCP clients on 127.0.0.1, a fifth of them leaving and rejoining, while PPO trains.

    The bar: a mean return of 0.9 over the last 200 finished episodes. A random policy gets
    about 0.26 and the optimal one 0.97 (one step costs 0.01, the goal pays 1, episodes are
    cut after 20 ticks); 0.9 means the agents walk straight to the goal almost always, and
    cannot be reached by the episodes of the untrained policy still in the window.
    """
    server = game_server.GameServer(game_server.default_settings(max_steps=40_000), tick_hz=0, seed=1, log_every=0)
    port = await server.start(0)
    swarm = asyncio.create_task(run_swarm("127.0.0.1", port, 60, duration=55, churn=0.2, mean_ticks=60, seed=1))
    start = time.perf_counter()

    def reached(s: Any) -> bool:
        return len(s.episode_returns) == s.episode_returns.maxlen and s.mean_return >= 0.9

    try:
        report = await asyncio.wait_for(server.run(duration=50, until=reached), 58)
    finally:
        swarm.cancel()
        await asyncio.gather(swarm, return_exceptions=True)
        await server.close()
    elapsed = time.perf_counter() - start
    assert report.stopped_because == "goal", (
        f"mean return {report.mean_return:.3f} after {report.trained_steps} steps ({report.stopped_because})"
    )
    assert report.mean_return >= 0.9
    assert report.joins > 60 and report.leaves > 0, "clients left and rejoined while training"
    assert server.session.stats.leaves > 0
    print(
        f"\nLineWalker: mean return {report.mean_return:.3f} after {report.trained_steps} steps, "
        f"{report.ticks} ticks, {report.joins} joins, {report.leaves} leaves, {elapsed:.1f} s"
    )


def test_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    # The kernel is a fresh process: let it import this checkout even when it is not installed.
    root = str(EXAMPLES.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(
        out.get("text", "") + json.dumps(out.get("data", {}))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "mean reward" in outputs
    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    every = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    # Live progress is one display, updated in place: its last state is the finished run.
    progress = [out for out in every if "updates" in out.get("data", {}).get("text/plain", "")]
    assert len(progress) == 1
    final = progress[0]["data"]["text/plain"]
    assert "/ 2000" in final and "setting up" not in final
    assert int(final.split("step")[1].split("/")[0]) >= 2000
    # The reward plot is drawn.
    assert any("image/png" in out.get("data", {}) for out in every)


def test_returns_numbers_are_sane(game_server: ModuleType) -> None:
    """The bar's reference points: a random policy and the optimal one on LineWorld."""
    world = game_server.LineWorld(seed=0)
    rng = np.random.default_rng(0)

    def play(policy: Any, episodes: int = 2000) -> float:
        total = []
        for _ in range(episodes):
            world.spawn(0)
            while True:
                _, terminated, truncated = world.move(0, policy(world.pos[0], world.goal[0]))
                if terminated or truncated:
                    total.append(world.returns[0])
                    break
        return float(np.mean(total))

    assert 0.2 < play(lambda p, g: int(rng.integers(0, 3))) < 0.35
    assert play(lambda p, g: 2 if g > p else 0) > 0.96


# ----- the game server under careless and hostile clients (no Runner: the protocol alone) ----------


class Line:
    """A raw TCP client of the game server: bytes out, JSON lines in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Line:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the server closed the connection (5 s bound against hangs)."""
        line = await asyncio.wait_for(self.reader.readline(), 5)
        return json.loads(line) if line else None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@pytest.fixture
async def protocol_server(game_server: ModuleType) -> Any:
    server = game_server.GameServer(tick_hz=0, log_every=0, idle_timeout=None)
    await server.start(0)
    yield server
    await server.close()


BAD_LINES = {
    "tick not an int": (b'{"type":"ack","tick":"abc"}', '"tick" of an ack must be an int >= 0, got "abc"'),
    "tick 1e400": (b'{"type":"ack","tick":1e400}', '"tick" of an ack must be an int >= 0, got Infinity'),
    "tick negative": (b'{"type":"ack","tick":-3}', '"tick" of an ack must be an int >= 0, got -3'),
    "null": (b"null", 'a JSON object with a "type" string expected'),
    "1e400": (b"1e400", 'a JSON object with a "type" string expected'),
    "a list": (b'[{"type":"join"}]', 'a JSON object with a "type" string expected'),
    "type a list": (b'{"type":["join"]}', 'a JSON object with a "type" string expected'),
    "unknown type": (b'{"type":"dance"}', "unknown message type 'dance'; known types: ack, goal, join, leave"),
    "deep nesting": (b"[" * 30_000 + b"]" * 30_000, "not JSON"),
    "not UTF-8": (b"\xff\xfe{}", "not JSON"),
    "goal cell true": (b'{"type":"goal","cell":true}', '"cell" of a goal must be an int in [0, 11), got true'),
    "goal cell 11": (b'{"type":"goal","cell":11}', '"cell" of a goal must be an int in [0, 11), got 11'),
    "goal cell 3.0": (b'{"type":"goal","cell":3.0}', '"cell" of a goal must be an int in [0, 11), got 3.0'),
    "goal no cell": (b'{"type":"goal"}', '"cell" of a goal must be an int in [0, 11), got null'),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
async def test_a_bad_line_gets_an_error_reply_and_the_connection_stays_usable(protocol_server: Any, case: str) -> None:
    raw, expected = BAD_LINES[case]
    client = await Line.open(protocol_server.port)
    await client.send(b'{"type":"join"}\n')
    welcome = await client.receive()
    assert welcome is not None and welcome["type"] == "welcome"
    await client.send(raw + b"\n")
    reply = await client.receive()
    assert reply is not None and reply["type"] == "error", reply
    assert expected in reply["message"]
    assert protocol_server.world.next_goal == {}, "a refused goal sets nothing"
    await client.send(b'{"type":"goal","cell":4}\n{"type":"leave"}\n')
    bye = await client.receive()
    assert bye == {"type": "bye", "agent": welcome["agent"]}
    assert protocol_server.report.bad_messages == 1
    await client.close()


async def test_goal_and_leave_before_join_are_refused(protocol_server: Any) -> None:
    client = await Line.open(protocol_server.port)
    await client.send(b'{"type":"goal","cell":2}\n{"type":"leave"}\n')
    for _ in range(2):
        reply = await client.receive()
        assert reply is not None and reply == {"type": "error", "message": "not joined; send join first"}
    assert protocol_server.world.next_goal == {}
    await client.close()


async def test_a_line_over_64_kib_gets_an_error_and_the_connection_closes(
    protocol_server: Any, game_server: ModuleType
) -> None:
    client = await Line.open(protocol_server.port)
    await client.send(b'{"type":"join"}\n')
    assert (await client.receive() or {}).get("type") == "welcome"
    client.writer.write(b" " * (game_server.MAX_LINE + 10) + b"\n")
    reply = await client.receive()
    assert reply is not None and reply["message"] == "a line longer than 65536 bytes; closing the connection"
    assert await client.receive() is None, "the server closed the connection"
    assert protocol_server.clients == {} and protocol_server.connections == set()
    await client.close()


async def test_a_connection_that_never_finishes_a_line_before_joining_is_closed(game_server: ModuleType) -> None:
    server = game_server.GameServer(tick_hz=0, log_every=0, idle_timeout=0.05)
    await server.start(0)
    try:
        half_open = await Line.open(server.port)
        await half_open.send(b'{"type":')  # never finished
        joined = await Line.open(server.port)
        await joined.send(b'{"type":"join"}\n')
        assert (await joined.receive() or {}).get("type") == "welcome"
        reply = await half_open.receive()
        assert reply is not None and "no complete message for 0.05 s without joining" in reply["message"]
        assert await half_open.receive() is None
        assert server.report.idle_timeouts == 1
        # A joined client may stay silent (acks are optional): it is not timed out.
        await asyncio.sleep(0.2)
        await joined.send(b'{"type":"leave"}\n')
        assert (await joined.receive() or {}).get("type") == "bye"
        assert server.report.idle_timeouts == 1
        await half_open.close()
        await joined.close()
    finally:
        await server.close()


async def test_a_joined_client_that_leaves_a_line_unfinished_is_closed(game_server: ModuleType) -> None:
    server = game_server.GameServer(tick_hz=0, log_every=0, idle_timeout=0.05)
    await server.start(0)
    try:
        client = await Line.open(server.port)
        await client.send(b'{"type":"join"}\n')
        assert (await client.receive() or {}).get("type") == "welcome"
        await asyncio.sleep(0.15)  # silent after joining: kept
        assert server.report.idle_timeouts == 0 and len(server.connections) == 1
        await client.send(b'{"type":"ack","ti')  # begun, never ended
        reply = await client.receive()
        assert reply is not None and "a message begun and not finished for 0.05 s" in reply["message"]
        assert await client.receive() is None
        assert server.report.idle_timeouts == 1
        while server.connections:  # its slot is free again
            await asyncio.sleep(0.01)
        await client.close()
    finally:
        await server.close()


async def test_connections_over_the_cap_are_refused_with_a_message(game_server: ModuleType) -> None:
    server = game_server.GameServer(tick_hz=0, log_every=0, max_connections=2)
    await server.start(0)
    try:
        first, second = await Line.open(server.port), await Line.open(server.port)
        for c in (first, second):
            await c.send(b'{"type":"join"}\n')
            assert (await c.receive() or {}).get("type") == "welcome"
        third = await Line.open(server.port)
        reply = await third.receive()
        assert reply == {"type": "error", "message": "server full (2 connections); try again later"}
        assert await third.receive() is None
        assert server.report.refused_connections == 1 and len(server.connections) == 2
        await first.close()
        while len(server.connections) > 1:  # the server notices the disconnect
            await asyncio.sleep(0.01)
        fourth = await Line.open(server.port)
        await fourth.send(b'{"type":"join"}\n')
        assert (await fourth.receive() or {}).get("type") == "welcome"
        for c in (second, third, fourth):
            await c.close()
    finally:
        await server.close()


EMFILE_CHILD = """
import asyncio, os, resource, sys
sys.path.insert(0, {examples!r})
import game_server

async def main():
    server = game_server.GameServer(tick_hz=0, log_every=0, idle_timeout=None, max_connections=10_000)
    port = await server.start(0)
    open_fds = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(port, flush=True)
    while server.report.accept_errors < 2:
        await asyncio.sleep(0.05)
    print("accept_errors", server.report.accept_errors, "connections", len(server.connections), flush=True)
    await server.close()

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lowers RLIMIT_NOFILE and reads /proc/self/fd")
async def test_running_out_of_file_descriptors_is_logged_once_not_per_accept() -> None:
    """asyncio retries a failing accept() every second and reports each: the server logs the first only."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        EMFILE_CHILD.format(examples=str(EXAMPLES)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    port = int(await asyncio.wait_for(child.stdout.readline(), 30))
    clients = [await Line.open(port) for _ in range(12)]  # more than the child's descriptors allow
    out, err = await asyncio.wait_for(child.communicate(), 30)
    for c in clients:
        await c.close()
    assert child.returncode == 0, err.decode()
    assert out.startswith(b"accept_errors "), out
    log = err.decode()
    assert log.count("accept() failed") == 1, log
    assert "Traceback" not in log and "socket.accept() out of system resource" not in log, log


def test_period_stats_keep_a_bounded_window_and_whole_run_extremes(game_server: ModuleType) -> None:
    stats = game_server.PeriodStats(window=8)
    for i in range(1000):
        stats.add(0.02 + (0.5 if i == 3 else 0.0) + (-0.015 if i == 500 else 0.0))
    assert stats.count == 1000 and stats.values().size == 8
    summary = stats.summary(target=0.02)
    assert summary["samples"] == 1000 and summary["max"] == pytest.approx(0.5)
    assert summary["p99"] == pytest.approx(0.0)  # the window holds only the newest periods


async def test_tick_periods_are_kept_in_bounded_memory(game_server: ModuleType) -> None:
    factory = fake_trainer_factory()
    server = game_server.GameServer(
        game_server.default_settings(max_steps=10**6), tick_hz=0, log_every=0, period_window=16, trainer_factory=factory
    )
    await server.start(0)
    try:
        report = await asyncio.wait_for(server.run(duration=30, until=lambda s: s._ticks_timed >= 300), 30)
    finally:
        await server.close()
    stored = sum(p.values().size for p in server.periods.values())
    assert stored <= 16 * len(server.periods)
    assert report.tick_period_ms["samples"] == 299  # every period but the first, though only 16 are kept
