"""SAC on Pendulum-v1: asynctrainer vs Stable-Baselines3, side by side (RL Zoo: 20k steps, lr 1e-3).

Both use SB3's SAC defaults with the Zoo's learning rate: buffer 1e6, 100 warm-up steps,
batch 256, τ 0.005, γ 0.99, one gradient step per env step, automatic entropy, two hidden
layers of 256. Each run is a subprocess, the two alternating. Reports wall seconds for the
20k steps, the mean training return of the last 10 episodes and a deterministic 10-episode
evaluation. Bars: RLlib's −250 within 20k steps; the RL Zoo's SB3 reaches about −157.

    pip install -e ".[cpu,bench]"
    python benchmarks/sac_pendulum.py [--seeds 0 1 2] [--steps 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from evaluation import evaluate as evaluate_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "pendulum_sac.yaml"


def evaluate(act: Any, seed: int, episodes: int = 10) -> float:
    return evaluate_env("Pendulum-v1", act, 20_000 + seed * 100, episodes)


def run_asynctrainer(seed: int, steps: int) -> dict[str, Any]:
    import anyio
    import numpy as np
    import yaml

    from asynctrainer import GymnasiumEnv, Runner, run_settings_from_dict

    # The example config, with this run's step budget.
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["behaviors"]["Pendulum"]["max_steps"] = steps
    settings = run_settings_from_dict(config)

    async def main() -> Any:
        runner = Runner(settings, GymnasiumEnv("Pendulum-v1", 1, seed=seed), seed=seed, stats_writers=[])
        start = time.perf_counter()
        await runner.run()
        return time.perf_counter() - start, runner

    wall, runner = anyio.run(main)
    trainer = runner.trainers["Pendulum"]
    snapshot = runner.slots["Pendulum"].latest()
    rng = np.random.default_rng(0)
    score = evaluate(lambda o: snapshot.act(o[None], deterministic=True, rng=rng).continuous[0] * 2.0, seed)
    last10 = list(trainer.reward_buffer)[:10]
    return {"wall_s": wall, "train_last10": statistics.mean(last10), "eval": score, "steps": trainer.step}


def run_sb3(seed: int, steps: int) -> dict[str, Any]:
    from stable_baselines3 import SAC

    start = time.perf_counter()
    model = SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=seed, device="cpu", verbose=0)
    model.learn(steps)
    wall = time.perf_counter() - start
    score = evaluate(lambda o: model.predict(o, deterministic=True)[0], seed)
    last10 = [e["r"] for e in list(model.ep_info_buffer)[-10:]]
    return {"wall_s": wall, "train_last10": statistics.mean(last10), "eval": score, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sac_pendulum.json"))
    parser.add_argument("--worker", choices=["asynctrainer", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = run_asynctrainer if args.worker == "asynctrainer" else run_sb3
        print(json.dumps(run(args.seed, args.steps)))
        return
    runs: dict[str, list[dict[str, Any]]] = {"asynctrainer": [], "sb3": []}
    for seed in args.seeds:
        for name in ("asynctrainer", "sb3") if seed % 2 == 0 else ("sb3", "asynctrainer"):
            cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed), "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            runs[name].append({"seed": seed, **json.loads(out)})
            print(f"{name:<13} seed {seed}: {runs[name][-1]}", flush=True)
    keys = ("wall_s", "train_last10", "eval")
    medians = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in runs.items()}
    a, b = medians["asynctrainer"], medians["sb3"]
    print()
    print(f"SAC Pendulum-v1, {args.steps} steps, {len(args.seeds)} seeds, medians")
    print(f"{'':<14}{'wall s':>9}{'train last 10':>15}{'eval (10 ep)':>14}")
    for name, row in (("asynctrainer", a), ("SB3", b)):
        print(f"{name:<14}{row['wall_s']:>9.1f}{row['train_last10']:>15.1f}{row['eval']:>14.1f}")
    print(f"{'ratio a/SB3':<14}{a['wall_s'] / b['wall_s']:>9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "python": platform.python_version()}
    out.write_text(json.dumps({"meta": meta, "runs": runs, "medians": medians}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
