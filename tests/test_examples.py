"""The examples: the game server with TCP clients (fake and real PPO) and the notebook."""

from __future__ import annotations

import asyncio
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
