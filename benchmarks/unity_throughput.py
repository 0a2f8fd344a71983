"""Agent-steps per second through the Unity gRPC path, and the loop's lag while training on it.

Each "player" is the Unity stand-in (``asynctrainer.testing.unity_standin``) in its own process,
launched by the real launcher as a built player would be, speaking ML-Agents' communicator
to a :class:`UnityEnv` on this process's event loop. Two measurements:

1. **Throughput**, random actions: for 1, 16 and 256 agents per player and 1 and 4 players
   (one env per player, stepped concurrently on one loop as the Runner does), agent-steps/s,
   exchanges/s, and the trainer side's cost per exchange: this process's CPU time (the loop
   and gRPC's threads) divided by the exchanges. The players' own cost (building 256
   ``AgentInfoProto`` in Python) is theirs and is not counted, but it bounds the rate.
2. **Loop lag while training**: PPO on one player of 16 agents; a heartbeat task on the same
   loop sleeps 1 ms at a time and records how late it wakes (p50/p99/max), after the first
   update so TensorFlow's one-off tracing is excluded, and for the whole run.

The floor the numbers are compared with (``bare gRPC``): the same players against a
minimal grpc.aio server that answers every exchange with canned actions and parses nothing,
which is what the transport costs before any of UnityEnv's work. (ML-Agents' own Python side,
``mlagents-envs``, cannot be installed next to TensorFlow 2.16+: it needs Python <= 3.10 and
protobuf < 3.21, so it is not run.)

Goals on the 2-core machine: >= 50,000 agent-steps/s at 256 agents x 1 player, trainer-side
<= 0.2 ms per exchange at 16 agents, loop-lag p99 <= 2 ms while training.

    python benchmarks/unity_throughput.py [--seconds 5] [--train-steps 20000] \\
        [--out benchmarks/out/unity_throughput.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from loop_lag import first_update_time, heartbeat, summary

from asynctrainer import Runner
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, StepBatch
from asynctrainer.envs.unity.communicator_objects.unity_message_pb2 import UnityInputProto, UnityMessageProto
from asynctrainer.envs.unity.communicator_objects.unity_rl_initialization_pb2 import UnityRLInitializationInputProto
from asynctrainer.envs.unity.communicator_objects.unity_rl_pb2 import STEP, UnityRLInputProto
from asynctrainer.envs.unity.env import UnityEnv
from asynctrainer.envs.unity.sources import UnityEnvFactory
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.startup import preload
from asynctrainer.testing.unity_standin import free_ports, write_player_executable

AGENTS = (1, 16, 256)
PLAYERS = (1, 4)


def random_actions(specs: dict[str, BehaviorSpec], steps: dict[str, StepBatch], rng: np.random.Generator) -> Any:
    out = {}
    for name, batch in steps.items():
        n, a = len(batch.decision), specs[name].action_spec
        continuous = rng.uniform(-1, 1, (n, a.continuous_size)).astype(np.float32)
        discrete = np.stack([rng.integers(0, b, n) for b in a.discrete_branches], axis=1).astype(np.int32)
        out[name] = ActionBatch(continuous, discrete.reshape(n, len(a.discrete_branches)), batch.decision.agent_id)
    return out


def factories(build: Path, players: int, log_dir: Path) -> list[UnityEnvFactory]:
    base = free_ports(players)
    return [
        UnityEnvFactory(base + i, worker_id=i, env_path=str(build), log_dir=log_dir, no_graphics=True)
        for i in range(players)
    ]


async def drive(env: UnityEnv, seconds: float, warmup: float, counts: list[int]) -> None:
    """Step ``env`` with random actions; ``counts``: [agent-steps and exchanges after the warm-up, all exchanges]."""
    rng = np.random.default_rng(0)
    specs = dict(env.behavior_specs)
    steps = await env.reset()
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < warmup + seconds:
        steps = await env.step(random_actions(specs, steps, rng))
        counts[2] += 1
        if elapsed >= warmup:
            counts[0] += sum(len(b.decision) for b in steps.values())
            counts[1] += 1


async def throughput(tmp: Path, agents: int, players: int, seconds: float, warmup: float) -> dict[str, float]:
    write_player_executable(tmp / f"Game{agents}", num_agents=agents, action_sizes="0,1")
    envs = [await f() for f in factories(tmp / f"Game{agents}", players, tmp / "logs")]
    counts = [[0, 0, 0] for _ in envs]
    try:
        cpu = time.process_time()
        await asyncio.gather(*(drive(env, seconds, warmup, c) for env, c in zip(envs, counts, strict=True)))
        cpu = time.process_time() - cpu
    finally:
        for env in envs:
            await env.aclose()
    return {
        "agent_steps_per_s": sum(c[0] for c in counts) / seconds,
        "exchanges_per_s": sum(c[1] for c in counts) / seconds,
        "trainer_cpu_ms_per_exchange": 1000.0 * cpu / max(1, sum(c[2] for c in counts)),
    }


# ----- the floor: a bare grpc.aio server that answers with canned actions ------------------------


async def bare_grpc(tmp: Path, agents: int, players: int, seconds: float, warmup: float) -> dict[str, float]:
    """Players against a server that parses nothing and replies with prebuilt messages."""
    write_player_executable(tmp / f"Bare{agents}", num_agents=agents, action_sizes="0,1")
    fs = factories(tmp / f"Bare{agents}", players, tmp / "logs")
    init = UnityMessageProto()
    init.header.status = 200
    init.unity_input.rl_initialization_input.CopyFrom(
        UnityRLInitializationInputProto(seed=0, communication_version="1.5.0", package_version="0")
    )
    init.unity_input.rl_initialization_input.capabilities.baseRLCapabilities = True
    step = UnityMessageProto()
    step.header.status = 200
    rl_input = UnityRLInputProto(command=STEP)
    agent_actions = rl_input.agent_actions["1D?team=0"]
    for _ in range(agents):
        agent_actions.value.add().discrete_actions.append(1)
    step.unity_input.CopyFrom(UnityInputProto(rl_input=rl_input))
    init_bytes, step_bytes = init.SerializeToString(), step.SerializeToString()
    counting = [False]
    calls: dict[int, int] = {}

    def handler_for(port: int) -> Any:
        calls[port] = 0

        async def exchange(request: bytes, context: Any) -> bytes:
            calls[port] += 1
            if counting[0]:
                counted[0] += 1
            return init_bytes if calls[port] == 1 else step_bytes  # the first call is the handshake

        return grpc.method_handlers_generic_handler(
            "communicator_objects.UnityToExternalProto",
            {"Exchange": grpc.unary_unary_rpc_method_handler(exchange)},
        )

    counted = [0]
    servers = []
    for f in fs:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 30)])
        server.add_generic_rpc_handlers((handler_for(f.port),))
        server.add_insecure_port(f"localhost:{f.port}")
        await server.start()
        servers.append(server)
    procs = []
    for f in fs:
        launcher = f.make().launcher  # the launcher only: no UnityEnv in the way
        assert launcher is not None
        procs.append(await launcher.launch(f.port))
    try:
        await asyncio.sleep(warmup)
        counting[0] = True
        cpu = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu
        counting[0] = False
    finally:
        for proc in procs:
            proc.kill()
        for server in servers:
            await server.stop(grace=None)
    n = counted[0]
    return {
        "agent_steps_per_s": n * agents / seconds,
        "exchanges_per_s": n / seconds,
        "trainer_cpu_ms_per_exchange": 1000.0 * cpu / max(1, n),
    }


# ----- loop lag while training ---------------------------------------------------------------------


async def training_lag(tmp: Path, steps: int, agents: int) -> dict[str, Any]:
    write_player_executable(tmp / "Train", num_agents=agents, action_sizes="0,1")
    settings = run_settings_from_dict(
        {
            "behaviors": {
                "1D": {
                    "trainer_type": "ppo",
                    "hyperparameters": {"batch_size": 256, "buffer_size": 2048},
                    "network_settings": {"hidden_units": 128, "num_layers": 2},
                    "max_steps": steps,
                    "summary_freq": 10_000,
                    "time_horizon": 64,
                }
            }
        }
    )
    (factory,) = factories(tmp / "Train", 1, tmp / "logs")
    lags: list[float] = []
    stamps: list[float] = []
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(lags, stop, stamps=stamps))
    runner = Runner(settings, factory, seed=0, stats_writers=[], results_dir=tmp / "results", run_id="lag")
    first_update = asyncio.create_task(first_update_time(runner, "1D"))
    start = time.perf_counter()
    result = await runner.run()
    wall = time.perf_counter() - start
    stop.set()
    await beat
    updated_at = first_update.result() if first_update.done() else math.inf  # no update: no steady state
    first_update.cancel()
    steady = [lag for lag, t in zip(lags, stamps, strict=True) if t > updated_at]
    return {
        "whole_run": summary(lags),
        "steady_state": summary(steady) if steady else None,
        "steps": result.steps["1D"],
        "updates": result.updates["1D"],
        "wall_s": wall,
        "agent_steps_per_s": result.steps["1D"] / wall,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--train-steps", type=int, default=20_000)
    parser.add_argument("--train-agents", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/out/unity_throughput.json")
    args = parser.parse_args()
    preload()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        print(f"{'agents':>7}{'players':>8}  {'path':<10}{'agent-steps/s':>15}{'exchanges/s':>13}{'cpu ms/exch':>13}")
        for agents in AGENTS:
            for players in PLAYERS:
                for path, measure in (("UnityEnv", throughput), ("bare gRPC", bare_grpc)):
                    r = await measure(tmp, agents, players, args.seconds, args.warmup)
                    rows.append({"agents": agents, "players": players, "path": path, **r})
                    print(
                        f"{agents:>7}{players:>8}  {path:<10}{r['agent_steps_per_s']:>15,.0f}"
                        f"{r['exchanges_per_s']:>13,.0f}{r['trainer_cpu_ms_per_exchange']:>13.3f}"
                    )
        lag = await training_lag(tmp, args.train_steps, args.train_agents)
    steady = lag["steady_state"] or lag["whole_run"]
    print(
        f"\nloop lag while PPO trains on 1 player x {args.train_agents} agents ({lag['steps']} steps, "
        f"{lag['updates']} updates, {lag['agent_steps_per_s']:,.0f} agent-steps/s): steady p50 "
        f"{steady['p50_ms']:.3f} ms, p99 {steady['p99_ms']:.3f} ms, max {steady['max_ms']:.3f} ms; "
        f"whole run p99 {lag['whole_run']['p99_ms']:.3f} ms, max {lag['whole_run']['max_ms']:.3f} ms"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "seconds": args.seconds,
        "goals": {
            "agent_steps_per_s_256x1": 50_000,
            "trainer_cpu_ms_per_exchange_16": 0.2,
            "loop_lag_p99_ms": 2.0,
        },
    }
    out.write_text(json.dumps({"meta": meta, "throughput": rows, "training_lag": lag}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
