"""Env throughput with the local executor and with Ray env workers, when envs are the bottleneck.

PPO trains CartPole-v1 (examples/cartpole_ppo.yaml) whose every step costs an extra
``--cost-ms`` (``sleep``: the env waits on something outside Python, e.g. a simulator;
``burn``: the env computes in Python and holds the GIL). Each row is one run of the Runner:
the local executor (one env loop, the copies stepped one after the other in a thread), then
``executor: ray`` with 1 and 2 worker actors; then the same with a learner that does nothing
(``learner: none``, a fake trainer), which shows what the env side alone delivers.
Throughput is the learner's intake (agent steps, i.e. steps of one env copy, per second)
once 10 % of the steps are done (Ray and TF start-up excluded). The learner side is measured
too: time per update, trajectory bytes per step as they cross the process boundary. Prints a
table and writes JSON.

    RAY_AUTH_MODE=disabled PYTHONPATH=. python benchmarks/scale_out.py [--steps 15000] [--cost-ms 1]
        [--modes sleep burn] [--sampling-only sleep]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import pickle
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from asynctrainer import Runner
from asynctrainer.envs.gymnasium_env import GymnasiumEnv
from asynctrainer.settings import load_run_settings, run_settings_from_dict

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "cartpole_ppo.yaml"


class CostlyStep(gymnasium.Wrapper):  # type: ignore[type-arg]
    """Adds ``cost_ms`` to every step: ``sleep`` (GIL released) or ``burn`` (busy Python loop)."""

    def __init__(self, env: Any, cost_ms: float, mode: str) -> None:
        super().__init__(env)
        self.cost = cost_ms / 1000.0
        self.mode = mode

    def step(self, action: Any) -> Any:
        if self.mode == "sleep":
            time.sleep(self.cost)
        else:
            end = time.perf_counter() + self.cost
            while time.perf_counter() < end:
                pass
        return self.env.step(action)


def make_costly_cartpole(cost_ms: float, mode: str) -> Any:
    return CostlyStep(gymnasium.make("CartPole-v1"), cost_ms, mode)


def env_factory(copies: int, cost_ms: float, mode: str, seed: int) -> Any:
    """A picklable AsyncEnv factory: ``copies`` costly CartPoles stepped as one vector env."""
    return functools.partial(
        GymnasiumEnv, functools.partial(make_costly_cartpole, cost_ms, mode), copies, seed, behavior_name="CartPole"
    )


def find_timer(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    for child_name, child in node.get("children", {}).items():
        if child_name == name:
            return child
        found = find_timer(child, name)
        if found is not None:
            return found
    return None


async def one_run(
    executor: str, workers: int, copies: int, steps: int, cost_ms: float, mode: str, learner: str = "ppo"
) -> dict[str, Any]:
    data = load_run_settings(CONFIG).to_yaml_dict()
    data["behaviors"]["CartPole"]["max_steps"] = steps
    data["behaviors"]["CartPole"]["summary_freq"] = max(1000, steps // 10)
    data["env_settings"] = {"executor": executor, "num_workers": workers, "envs_per_worker": 1}
    settings = run_settings_from_dict(data)
    trainer_factory = None
    if learner == "none":
        from asynctrainer.testing.fakes import fake_trainer_factory

        trainer_factory = fake_trainer_factory()
    runner = Runner(
        settings, env_factory(copies, cost_ms, mode, seed=0), seed=0, stats_writers=[], trainer_factory=trainer_factory
    )
    samples: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            trainer = runner.trainers.get("CartPole")
            samples.append((time.perf_counter(), 0 if trainer is None else trainer.step))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(watch())
    start = time.perf_counter()
    result = await runner.run()
    end = time.perf_counter()
    done.set()
    await task
    t0, s0 = next((t, s) for t, s in samples if s >= steps // 10)
    trainer = runner.trainers["CartPole"]
    update = find_timer(runner.timers.to_dict(), "_update_policy") or {"total": 0.0, "count": 0}
    lags = [r.values["Policy/Lag"].mean for r in trainer.stats_reporter.history if "Policy/Lag" in r.values]
    return {
        "learner": learner,
        "executor": executor,
        "workers": workers if executor == "ray" else 0,
        "env_copies": copies * (workers if executor == "ray" else 1),
        "steps": trainer.step,
        "agent_steps_per_s": (trainer.step - s0) / (end - t0),
        "updates": result.updates["CartPole"],
        "updates_per_s": result.updates["CartPole"] / (end - start),
        "update_ms": 1000.0 * update["total"] / max(1, update["count"]),
        "policy_lag_mean": float(np.mean(lags)) if lags else 0.0,
        "wall_s": end - start,
    }


async def bytes_per_step(copies: int) -> dict[str, float]:
    """Pickled size of a worker's batch per experience (what a worker sends per agent step)."""
    from asynctrainer.scale.codec import snapshot_to_payload, trajectory_from_dict
    from asynctrainer.scale.worker import BehaviorConfig, EnvWorker
    from asynctrainer.testing.fakes import random_snapshot

    worker = EnvWorker(env_factory(copies, 0.0, "sleep", 0), {"CartPole": BehaviorConfig(32).to_dict()})
    env = GymnasiumEnv("CartPole-v1", 1)
    snapshot = random_snapshot("CartPole", env.behavior_specs["CartPole"], hidden=64)
    await env.aclose()
    await worker.start({"behavior": "CartPole", "snapshot": snapshot_to_payload(snapshot)})
    batch = await worker.sample(2048, 10**6)
    await worker.close()
    experiences = sum(len(t["rewards"]) for t in batch["trajectories"])
    wire = pickle.dumps(batch, protocol=5)
    policy = len(pickle.dumps(snapshot_to_payload(snapshot), protocol=5))
    # The driver's share: unpickle the batch and rebuild the Trajectory objects.
    start = time.perf_counter()
    for _ in range(20):
        [trajectory_from_dict(t) for t in pickle.loads(wire)["trajectories"]]
    decode = (time.perf_counter() - start) / 20
    return {
        "batch_bytes_per_step": len(wire) / experiences,
        "policy_bytes": float(policy),
        "driver_decode_us_per_step": 1e6 * decode / experiences,
        "steps_per_trajectory": experiences / len(batch["trajectories"]),
    }


ROWS = [("local", 1, 8), ("ray", 1, 8), ("ray", 2, 4), ("ray", 2, 8)]


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| env cost | learner | executor | workers | env copies | agent steps/s | updates/s | update ms | policy lag |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in results:
        lines.append(
            f"| {r['cost']} | {r['learner']} | {r['executor']} | {r['workers']} | {r['env_copies']} "
            f"| {r['agent_steps_per_s']:.0f} "
            f"| {r['updates_per_s']:.2f} | {r['update_ms']:.1f} | {r['policy_lag_mean']:.2f} |"
        )
    return "\n".join(lines)


async def run(steps: int, cost_ms: float, modes: list[str], sampling_only: list[str]) -> dict[str, Any]:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    results = []
    try:
        plan = [(mode, "ppo") for mode in modes] + [(mode, "none") for mode in sampling_only]
        for mode, learner in plan:
            for executor, workers, copies in ROWS:
                row = await one_run(executor, workers, copies, steps, cost_ms, mode, learner)
                row["cost"] = f"{cost_ms:g} ms {mode}"
                print(
                    f"{row['cost']:>12} {learner:>4} {executor:>5} workers={row['workers']} "
                    f"copies={row['env_copies']:>2}: "
                    f"{row['agent_steps_per_s']:7.0f} steps/s",
                    flush=True,
                )
                results.append(row)
    finally:
        ray.shutdown()
    sizes = await bytes_per_step(8)
    return {"rows": results, "wire": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15000)
    parser.add_argument("--cost-ms", type=float, default=1.0)
    parser.add_argument("--modes", nargs="*", default=["sleep", "burn"], choices=["sleep", "burn"])
    parser.add_argument("--sampling-only", nargs="*", default=["sleep"], choices=["sleep", "burn"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "scale_out.json"))
    args = parser.parse_args()
    measured = asyncio.run(run(args.steps, args.cost_ms, args.modes, args.sampling_only))
    print()
    print(table(measured["rows"]))
    wire = measured["wire"]
    print(
        f"\nA worker's batch: {wire['batch_bytes_per_step']:.0f} bytes per agent step (pickled); "
        f"one policy broadcast: {wire['policy_bytes'] / 1024:.1f} KiB; the driver unpickles and rebuilds "
        f"{wire['driver_decode_us_per_step']:.1f} µs per step "
        f"({wire['steps_per_trajectory']:.0f} steps per trajectory)."
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "config": str(CONFIG.relative_to(ROOT)),
        "steps": args.steps,
        "cost_ms": args.cost_ms,
    }
    out.write_text(json.dumps({"meta": meta, **measured}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
