"""Sparse reward: PPO on MountainCar-v0 with and without curiosity and RND, side by side.

MountainCar-v0 pays −1 every step until the car reaches the flag (or 200 steps pass), so the
env's reward tells a policy nothing until it has already found the goal. Each variant trains
the same PPO config (``extrinsic`` only, ``+ curiosity``, ``+ rnd``) for ``--steps`` env steps on
each seed, its own subprocess, variants alternating per seed. The measure: env steps until the
goal was reached in at least 90 % of the last 20 episodes (``-`` when never within the budget).

    python benchmarks/sparse_reward.py [--seeds 0 1 2] [--steps 300000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
N_ENVS = 8
WINDOW, SHARE = 20, 0.9
#: The learned signals read normalised observations (MountainCar's velocity is ~100x smaller than its position).
SIGNAL_NETWORK = {"hidden_units": 64, "num_layers": 2, "normalize": True}
VARIANTS: dict[str, dict[str, Any]] = {
    "extrinsic": {"extrinsic": {"gamma": 0.99}},
    "+ curiosity": {
        "extrinsic": {"gamma": 0.99},
        "curiosity": {"gamma": 0.99, "strength": 0.1, "network_settings": SIGNAL_NETWORK},
    },
    "+ rnd": {
        "extrinsic": {"gamma": 0.99},
        "rnd": {"gamma": 0.99, "strength": 0.1, "network_settings": SIGNAL_NETWORK},
    },
}


def config(signals: dict[str, Any], steps: int) -> dict[str, Any]:
    return {
        "behaviors": {
            "MountainCar": {
                "trainer_type": "ppo",
                "hyperparameters": {
                    "batch_size": 256,
                    "buffer_size": 2048,
                    "learning_rate": 3e-4,
                    "beta": 0.005,
                    "epsilon": 0.2,
                    "lambd": 0.95,
                    "num_epoch": 4,
                    "learning_rate_schedule": "constant",
                },
                "network_settings": {"hidden_units": 64, "num_layers": 2, "normalize": True},
                "reward_signals": signals,
                "max_steps": steps,
                "time_horizon": 256,
                "summary_freq": 100_000,
            }
        }
    }


def run_variant(name: str, seed: int, steps: int) -> dict[str, Any]:
    import anyio
    import gymnasium

    from asynctrainer import GymnasiumEnv, Runner, run_settings_from_dict

    episodes: deque[bool] = deque(maxlen=WINDOW)
    counter = {"steps": 0, "solved_at": None, "episodes": 0, "goals": 0}

    class Tally(gymnasium.Wrapper[Any, Any, Any, Any]):
        """Counts env steps and whether each episode reached the goal (terminated, not truncated)."""

        def step(self, action: Any) -> Any:
            out = super().step(action)
            counter["steps"] += 1
            terminated, truncated = bool(out[2]), bool(out[3])
            if terminated or truncated:
                episodes.append(terminated)
                counter["episodes"] += 1
                counter["goals"] += int(terminated)
                full = len(episodes) == WINDOW
                if counter["solved_at"] is None and full and sum(episodes) >= SHARE * WINDOW:
                    counter["solved_at"] = counter["steps"]
            return out

    settings = run_settings_from_dict(config(VARIANTS[name], steps))
    env = GymnasiumEnv(lambda: Tally(gymnasium.make("MountainCar-v0")), N_ENVS, seed=seed, behavior_name="MountainCar")
    start = time.perf_counter()
    anyio.run(lambda: Runner(settings, env, seed=seed, stats_writers=[]).run())
    return {
        "solved_steps": counter["solved_at"],
        "episodes": counter["episodes"],
        "goal_share": counter["goals"] / max(counter["episodes"], 1),
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sparse_reward.json"))
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_variant(args.worker, args.seed, args.steps)))
        return
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for i, seed in enumerate(args.seeds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed), "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            result = {"seed": seed, **json.loads(out)}
            runs[name].append(result)
            print(f"{name:<12} seed {seed}: {result}", flush=True)
    print()
    print(
        f"MountainCar-v0, PPO, {len(args.seeds)} seeds, {args.steps} steps each: env steps until the goal is "
        f"reached in {SHARE:.0%} of the last {WINDOW} episodes ({platform.processor() or platform.machine()})"
    )
    print(f"{'':<14}{'per seed':>28}{'solved':>8}{'median':>10}{'goal share':>12}{'wall s':>8}")
    table = {}
    for name, rs in runs.items():
        solved = [r["solved_steps"] for r in rs]
        done = [s for s in solved if s is not None]
        median = statistics.median(done) if len(done) * 2 > len(solved) else None
        share = statistics.mean(r["goal_share"] for r in rs)
        wall = statistics.median(r["wall_s"] for r in rs)
        per_seed = " ".join("-" if s is None else f"{s // 1000}k" for s in solved)
        print(
            f"{name:<14}{per_seed:>28}{len(done):>5}/{len(solved)}"
            f"{'-' if median is None else f'{median / 1000:.0f}k':>10}{share:>12.2f}{wall:>8.0f}"
        )
        table[name] = {"solved": len(done), "median_solved_steps": median, "goal_share": share, "wall_s": wall}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "steps": args.steps, "window": WINDOW, "share": SHARE}
    out.write_text(json.dumps({"meta": meta, "runs": runs, "table": table}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
