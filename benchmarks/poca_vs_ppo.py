"""MA-POCA against independent PPO on a cooperative task: mpe2's simple_spread (PettingZoo API).

Three agents must cover three landmarks without colliding. With ``--local-ratio 0`` (the
default here) every agent gets only the *shared* reward (minus the summed distance of each
landmark to its nearest agent, minus collisions), so an agent cannot tell its own part in it:
the credit-assignment problem POCA's counterfactual baseline is for. Both trainers get the same
env (``PettingZooEnv``: one behavior ``agent?team=0``, the three agents one group), the same
config but ``trainer_type``, the same steps and seeds, run one after the other in this process.

The score is the mean per-agent return of an episode (25 steps) played by the final policy
(sampling, as it trained) over ``--episodes`` episodes on other seeds, and the mean of the last
100 training episodes. Higher (less negative) is better.

    python benchmarks/poca_vs_ppo.py [--steps 150000] [--seeds 1 2 3] [--episodes 200]
        [--out benchmarks/out/poca_vs_ppo.json]

Needs the ``pettingzoo`` extra and ``mpe2`` (``pip install mpe2``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from asynctrainer import Runner
from asynctrainer.envs.pettingzoo_env import PettingZooEnv
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.settings import run_settings_from_dict

BEHAVIOR = "agent"


def make_env(local_ratio: float) -> Any:
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(N=3, local_ratio=local_ratio, max_cycles=25, continuous_actions=False)


def config(trainer_type: str, steps: int, strength: float) -> Any:
    return run_settings_from_dict(
        {
            "behaviors": {
                BEHAVIOR: {
                    "trainer_type": trainer_type,
                    "hyperparameters": {
                        "batch_size": 512,
                        "buffer_size": 6000,
                        "learning_rate": 3e-4,
                        "beta": 0.01,
                        "epsilon": 0.2,
                        "lambd": 0.95,
                        "num_epoch": 4,
                    },
                    "network_settings": {"hidden_units": 128, "num_layers": 2, "normalize": True},
                    "reward_signals": {"extrinsic": {"gamma": 0.99, "strength": strength}},
                    "max_steps": steps,
                    "time_horizon": 25,
                    "summary_freq": 30000,
                }
            }
        }
    )


def evaluate(snapshot: PolicySnapshot, local_ratio: float, episodes: int, seed: int) -> float:
    """Mean per-agent return over ``episodes`` episodes of the policy sampling its actions."""
    env = make_env(local_ratio)
    rng = np.random.default_rng(seed)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total = 0.0
        while env.agents:
            agents = list(env.agents)
            batch = np.stack([obs[a] for a in agents]).astype(np.float32)
            acted = snapshot.act([batch], rng=rng)
            obs, rewards, _, _, _ = env.step({a: int(acted.discrete[i, 0]) for i, a in enumerate(agents)})
            total += float(np.mean([rewards[a] for a in agents]))
        returns.append(total)
    env.close()
    return float(np.mean(returns))


async def train(
    trainer_type: str, steps: int, seed: int, local_ratio: float, strength: float
) -> tuple[PolicySnapshot, dict[str, Any]]:
    env = PettingZooEnv(make_env(local_ratio), seed=seed)
    runner = Runner(config(trainer_type, steps, strength), env, seed=seed, stats_writers=[])
    start = time.perf_counter()
    result = await runner.run()
    seconds = time.perf_counter() - start
    trainer = runner.trainers[BEHAVIOR]
    last = list(trainer.reward_buffer)[:100]  # newest first
    snapshot = runner.slots[BEHAVIOR].latest()
    assert snapshot is not None
    return snapshot, {
        "seconds": seconds,
        "updates": result.updates[BEHAVIOR],
        "train_return_last100": float(np.mean(last)) if last else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--local-ratio", type=float, default=0.0)
    parser.add_argument(
        "--strength", type=float, default=0.1, help="extrinsic strength: scales the rewards (about -2 a step) down"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/poca_vs_ppo.json"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for trainer_type in ("poca", "ppo"):  # alternating, so drift in the machine's speed hits both
            snapshot, info = asyncio.run(train(trainer_type, args.steps, seed, args.local_ratio, args.strength))
            score = evaluate(snapshot, args.local_ratio, args.episodes, 10_000 + 100 * seed)
            rows.append({"trainer": trainer_type, "seed": seed, "eval_return": score, **info})
            print(
                f"{trainer_type:<5} seed {seed}: eval {score:8.2f}  train(last 100) "
                f"{info['train_return_last100']:8.2f}  {info['seconds']:6.1f} s"
            )
    print(f"\nsimple_spread (N=3, local_ratio {args.local_ratio}), {args.steps} agent steps, seeds {args.seeds}")
    print(f"{'trainer':<8} {'eval return (median)':>21} {'train last 100 (median)':>24} {'s (median)':>11}")
    for trainer_type in ("poca", "ppo"):
        mine = [r for r in rows if r["trainer"] == trainer_type]
        print(
            f"{trainer_type:<8} {statistics.median(r['eval_return'] for r in mine):21.2f} "
            f"{statistics.median(r['train_return_last100'] for r in mine):24.2f} "
            f"{statistics.median(r['seconds'] for r in mine):11.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"steps": args.steps, "local_ratio": args.local_ratio, "machine": platform.platform(), "rows": rows}
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
