"""Decision latency and throughput of inference-only serving and of GameSession while PPO trains.

Scenarios, each for 1, 64 and 1024 concurrent agents on one asyncio loop:

- ``PolicyServer(snapshot) decide()``: one task per agent, each awaiting ``decide()`` in a loop
  (concurrent calls are micro-batched into one numpy forward pass);
- ``PolicyServer(snapshot) decide_batch()``: one host task ticking all agents at once;
- ``PolicyServer(onnx) ...``: the same model exported to ONNX, run by onnxruntime (when installed);
- ``GameSession + Runner(PPO) decide()``: the agents feed a GameSession that a Runner trains
  PPO on, in the same loop (TensorFlow updates in a worker thread); measured after the first
  update, so TensorFlow's one-off tracing is not in it.

- visual policy (84×84×3 camera, ``nature_cnn``, 2 × 128 hidden, 3 discrete actions): the
  snapshot's ``act()`` for 1 and 64 agents with its encoder in numpy and in onnxruntime (what
  the trainers' snapshots use when onnxruntime is installed), and ``PolicyServer.decide_batch()``
  over the onnxruntime one;
- recurrent policy (the 8-observation spec, 2 × 64 hidden, an LSTM with ``memory_size`` 128):
  the snapshot's ``act()`` for 1 and 64 agents, each agent's memory fed back, beside the same
  network without memory.

Latency is the time one ``decide()`` (or one ``decide_batch()``) takes, awaited by its caller;
decisions/s counts the decisions the server acted on in the measuring window.
Goals: batch-1 p50 <= 100 µs in process; >= 100k decisions/s at 1024 agents; for the visual
policy, batch-1 p50 <= 1 ms and >= 5,000 decisions/s at batch 64.

    python benchmarks/serve_latency.py [--seconds 2] [--no-training] [--out benchmarks/out/serve_latency.json]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from asynctrainer.envs.game_session import GameSession, SessionStats
from asynctrainer.envs.spec import (
    DIM_NONE,
    DIM_TRANSLATIONAL_EQUIVARIANCE,
    ActionSpec,
    BehaviorSpec,
    ObservationSpec,
)
from asynctrainer.serving.server import PolicyServer
from asynctrainer.testing.fakes import random_snapshot

SPEC = BehaviorSpec((ObservationSpec((8,)),), ActionSpec(2, (3,)))
AGENTS = (1, 64, 1024)
VISUAL_SPEC = BehaviorSpec(
    (
        ObservationSpec(
            (84, 84, 3), "camera", (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)
        ),
    ),
    ActionSpec(0, (3,)),
)


def summarize(latencies: list[float], decisions: int, seconds: float, mean_batch: float) -> dict[str, float]:
    a = np.asarray(latencies) * 1e6
    return {
        "p50_us": float(np.percentile(a, 50)),
        "p99_us": float(np.percentile(a, 99)),
        "decisions_per_s": decisions / seconds,
        "mean_batch": mean_batch,
        "samples": int(a.size),
    }


async def per_agent_tasks(
    decide: Callable[[int, np.ndarray], Awaitable[Any]],
    n: int,
    seconds: float,
    counters: Callable[[], SessionStats],
    warm_up: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, float]:
    """``n`` tasks each awaiting ``decide`` in a loop; measured after ``warm_up`` (default: a short sleep)."""
    latencies: list[float] = []
    stop = False
    recording = False
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(n, 8)).astype(np.float32)

    async def agent(i: int) -> None:
        obs = observations[i]
        clock = time.perf_counter
        while not stop:
            start = clock()
            await decide(i, obs)
            if recording:
                latencies.append(clock() - start)

    tasks = [asyncio.create_task(agent(i)) for i in range(n)]
    await asyncio.sleep(min(0.3, seconds / 4))
    if warm_up is not None:
        await warm_up()
    recording = True
    before = copy.copy(counters())
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    recording = False
    after = counters()
    decisions = after.decisions - before.decisions
    stop = True
    await asyncio.gather(*tasks)
    return summarize(latencies, decisions, elapsed, decisions / max(after.batches - before.batches, 1))


async def one_ticker(
    server: PolicyServer, n: int, seconds: float, obs: np.ndarray | None = None, warm_up: int = 20
) -> dict[str, float]:
    """One host task calling ``decide_batch`` for all ``n`` agents (``obs``: random vectors by default)."""
    ids = np.arange(n)
    if obs is None:
        obs = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    for _ in range(warm_up):
        await server.decide_batch(None, ids, obs)
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    while clock() - start < seconds:
        t = clock()
        await server.decide_batch(None, ids, obs)
        latencies.append(clock() - t)
    elapsed = clock() - start
    return summarize(latencies, n * len(latencies), elapsed, float(n))


def timed_calls(call: Callable[[], Any], n: int, seconds: float) -> dict[str, float]:
    """``call`` (one decision for ``n`` agents) repeated for ``seconds`` after 5 warm-up calls."""
    for _ in range(5):
        call()
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    while clock() - start < seconds:
        t = clock()
        call()
        latencies.append(clock() - t)
    return summarize(latencies, n * len(latencies), clock() - start, float(n))


async def visual(seconds: float) -> dict[str, dict[str, float]]:
    """The snapshot of an 84×84×3 nature_cnn policy acting, encoder in numpy and in onnxruntime."""
    import dataclasses

    from asynctrainer.nn.networks import ActorCritic

    snapshot = ActorCritic(VISUAL_SPEC, hidden_units=128, num_layers=2, seed=0, vis_encode_type="nature_cnn").snapshot(
        "Camera", 1, 0, None, None
    )
    backends = {"numpy": dataclasses.replace(snapshot, image_encoder=None)}
    if snapshot.image_encoder is not None:
        backends["onnxruntime"] = snapshot
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, float]] = {}
    for n in (1, 64):
        images = [rng.random((n, *VISUAL_SPEC.observation_specs[0].shape), dtype=np.float32)]
        for backend, snap in backends.items():
            rows[f"act() {backend} x{n}"] = timed_calls(lambda s=snap, o=images: s.act(o, rng=rng), n, seconds)
    if "onnxruntime" in backends:
        for n in (1, 64):
            obs = rng.random((n, *VISUAL_SPEC.observation_specs[0].shape), dtype=np.float32)
            async with PolicyServer(snapshot, max_batch=1024, max_wait_ms=1.0) as server:
                rows[f"decide_batch() onnxruntime x{n}"] = await one_ticker(server, n, seconds, obs, warm_up=5)
    return rows


async def recurrent(seconds: float) -> dict[str, dict[str, float]]:
    """A policy with memory acting (memories fed back each call), beside the same body without memory."""
    from asynctrainer.nn.networks import ActorCritic

    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, float]] = {}
    for label, memory_size in (("no memory", 0), ("memory 128", 128)):
        snap = ActorCritic(SPEC, hidden_units=64, num_layers=2, seed=0, memory_size=memory_size).snapshot(
            "Bench", 1, 0, None, None
        )
        for n in (1, 64):
            obs = rng.normal(size=(n, 8)).astype(np.float32)
            state = {"memories": np.zeros((n, memory_size), np.float32) if memory_size else None}

            def call(s: Any = snap, o: np.ndarray = obs, st: dict[str, Any] = state) -> None:
                st["memories"] = s.act(o, rng=rng, memories=st["memories"]).memories

            rows[f"act() {label} x{n}"] = timed_calls(call, n, seconds)
    return rows


def stats_of(server: PolicyServer) -> Callable[[], SessionStats]:
    return lambda: server.stats


async def serving(source: Any, seconds: float) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for n in AGENTS:
        async with PolicyServer(source, max_batch=1024, max_wait_ms=1.0) as server:
            rows[f"decide() x{n}"] = await per_agent_tasks(server.decide, n, seconds, stats_of(server))
        async with PolicyServer(source, max_batch=1024, max_wait_ms=1.0) as server:
            rows[f"decide_batch() x{n}"] = await one_ticker(server, n, seconds)
    return rows


async def training(n: int, seconds: float) -> dict[str, float]:
    """GameSession fed by ``n`` agent tasks while a Runner trains PPO on the same loop."""
    from asynctrainer import Runner
    from asynctrainer.settings import run_settings_from_dict

    settings = run_settings_from_dict(
        {
            "behaviors": {
                "Bench": {
                    "trainer_type": "ppo",
                    "hyperparameters": {"batch_size": 256, "buffer_size": 4096, "learning_rate": 3.0e-4},
                    "network_settings": {"hidden_units": 64, "num_layers": 2},
                    "time_horizon": 64,
                    "max_steps": 10**9,
                    "summary_freq": 10**6,
                }
            }
        }
    )
    session = GameSession({"Bench": SPEC}, max_wait_ms=1.0)
    rng = np.random.default_rng(1)

    async def decide(i: int, obs: np.ndarray) -> Any:
        return await session.decide(i, obs, reward=float(rng.normal()))

    async with Runner(settings, session, seed=0, stats_writers=[], overflow="drop_oldest") as runner:

        async def first_update() -> None:
            deadline = time.perf_counter() + 120
            while runner.slots["Bench"].version < 1 and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)  # the first update (and TensorFlow's tracing) is not measured

        row = await per_agent_tasks(decide, n, seconds, lambda: session.stats, first_update)
        row["updates_by_the_end"] = float(runner.trainers["Bench"].update_count)
    return row


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'scenario':<34}{'p50 µs':>10}{'p99 µs':>10}{'decisions/s':>14}{'mean batch':>12}")
    for name, r in rows.items():
        print(
            f"{name:<34}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['decisions_per_s']:>14,.0f}{r['mean_batch']:>12.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per scenario")
    parser.add_argument("--no-training", action="store_true", help="skip the GameSession + PPO scenarios")
    parser.add_argument(
        "--no-visual",
        action="store_true",
        help="skip the visual- and recurrent-policy scenarios (they need TensorFlow)",
    )
    parser.add_argument("--out", default="benchmarks/out/serve_latency.json")
    args = parser.parse_args()

    snapshot = random_snapshot("Bench", SPEC, hidden=64)
    results: dict[str, dict[str, dict[str, float]]] = {}
    results["PolicyServer(snapshot)"] = await serving(snapshot, args.seconds)
    print_table("PolicyServer over a PolicySnapshot (numpy)", results["PolicyServer(snapshot)"])
    try:
        from asynctrainer.export.onnx import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "Bench.onnx"
            export_onnx(snapshot, path)
            results["PolicyServer(onnx)"] = await serving(path, args.seconds)
        print_table("PolicyServer over the same policy as .onnx (onnxruntime)", results["PolicyServer(onnx)"])
    except ImportError as exc:
        print(f"\n(onnx scenarios skipped: {exc})")
    if not args.no_visual:
        results["Visual policy"] = await visual(args.seconds)
        print_table(
            "An 84x84x3 nature_cnn policy's snapshot acting (encoder in numpy / onnxruntime)", results["Visual policy"]
        )
    if not args.no_visual:
        results["Recurrent policy"] = await recurrent(args.seconds)
        print_table(
            "A policy with memory (LSTM, memory_size 128) acting, beside the same body without",
            results["Recurrent policy"],
        )
    if not args.no_training:
        rows = {f"decide() x{n}": await training(n, args.seconds) for n in AGENTS}
        results["GameSession + Runner(PPO)"] = rows
        print_table("GameSession while a Runner trains PPO on the same loop (after the first update)", rows)

    base = results["PolicyServer(snapshot)"]
    goals = {
        "batch-1 p50 <= 100 µs": base["decide() x1"]["p50_us"] <= 100.0,
        ">= 100k decisions/s at 1024 agents (decide())": base["decide() x1024"]["decisions_per_s"] >= 1e5,
        ">= 100k decisions/s at 1024 agents (decide_batch())": base["decide_batch() x1024"]["decisions_per_s"] >= 1e5,
    }
    if "Visual policy" in results and "act() onnxruntime x1" in results["Visual policy"]:
        vis = results["Visual policy"]
        goals["visual batch-1 p50 <= 1 ms (act() onnxruntime)"] = vis["act() onnxruntime x1"]["p50_us"] <= 1000.0
        goals["visual >= 5,000 decisions/s at batch 64 (act() onnxruntime)"] = (
            vis["act() onnxruntime x64"]["decisions_per_s"] >= 5000.0
        )
    print()
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "seconds_per_scenario": args.seconds,
        "policy": "8 obs -> 64 tanh -> 2 continuous + 1 discrete branch of 3",
        "visual_policy": "84x84x3 camera -> nature_cnn -> 2 x 128 tanh -> 1 discrete branch of 3",
        "recurrent_policy": "8 obs -> 2 x 64 tanh -> LSTM (memory_size 128) -> 2 continuous + 1 discrete branch of 3",
    }
    out.write_text(json.dumps({"meta": meta, "goals": goals, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
