"""Time to solve CartPole-v1: asynctrainer PPO vs Stable-Baselines3 PPO, side by side.

Both use the RL Zoo's tuned CartPole settings (8 envs, n_steps 32, batch 256, 20 epochs,
γ 0.98, λ 0.8, linear lr 1e-3 and clip 0.2, no entropy bonus). Each run is its own
subprocess, asynctrainer and SB3 alternating, so both meet the same machine state. For each
run: wall seconds and env steps until the rolling-100 training return first reaches 475,
wall seconds for 100k steps, and a deterministic 20-episode evaluation of the final policy.

    pip install -e ".[cpu,bench]"   # SB3 and a pinned CPU torch
    python benchmarks/time_to_solve.py [--seeds 0 1 2] [--steps 100000] [--readme]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from evaluation import evaluate

ROOT = Path(__file__).resolve().parent.parent
TARGET = 475.0
N_ENVS = 8


def eval_episodes(act: Any, seed: int, episodes: int = 20) -> float:
    return evaluate("CartPole-v1", act, 10_000 + seed * 100, episodes)


def run_asynctrainer(seed: int, steps: int, strict: bool = False) -> dict[str, Any]:
    import anyio
    import numpy as np

    from asynctrainer import Runner
    from asynctrainer.envs.gymnasium_env import GymnasiumEnv
    from asynctrainer.nn.tf_setup import keras
    from asynctrainer.settings import load_run_settings, run_settings_from_dict

    keras()  # import the framework before the clock starts, as SB3's torch is imported before its clock
    data = load_run_settings(ROOT / "examples" / "cartpole_ppo.yaml").to_yaml_dict()
    data["behaviors"]["CartPole"]["max_steps"] = steps
    data["behaviors"]["CartPole"]["strict_on_policy"] = strict
    settings = run_settings_from_dict(data)
    solved: dict[str, float] = {}

    async def main() -> Any:
        runner = Runner(settings, GymnasiumEnv("CartPole-v1", N_ENVS, seed=seed), seed=seed, stats_writers=[])
        start = time.perf_counter()

        async def watch() -> None:
            while "CartPole" not in runner.trainers:
                await anyio.sleep(0.01)
            t = runner.trainers["CartPole"]
            while True:
                buf = t.reward_buffer
                if len(buf) == buf.maxlen and sum(buf) / len(buf) >= TARGET:
                    solved.update(wall_s=time.perf_counter() - start, steps=t.step)
                    return
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await runner.run()
            tg.cancel_scope.cancel()
        return time.perf_counter() - start, runner.slots["CartPole"].latest()

    total, snapshot = anyio.run(main)
    rng = np.random.default_rng(0)
    score = eval_episodes(lambda o: int(snapshot.act(o[None], deterministic=True, rng=rng).discrete[0, 0]), seed)
    return {
        "solve_wall_s": solved.get("wall_s"),
        "solve_steps": solved.get("steps"),
        "total_wall_s": total,
        "eval": score,
    }


def run_sb3(seed: int, steps: int, strict: bool = False) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    def linear(initial: float) -> Any:
        return lambda progress: progress * initial

    solved: dict[str, float] = {}

    class Solve(BaseCallback):
        def _on_step(self) -> bool:
            buf = self.model.ep_info_buffer
            if "wall_s" not in solved and len(buf) == buf.maxlen and sum(e["r"] for e in buf) / len(buf) >= TARGET:
                solved.update(wall_s=time.perf_counter() - start, steps=self.num_timesteps)
            return True

    start = time.perf_counter()
    model = PPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=N_ENVS, seed=seed),
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(steps, callback=Solve())
    total = time.perf_counter() - start
    score = eval_episodes(lambda o: int(model.predict(o, deterministic=True)[0]), seed)
    return {
        "solve_wall_s": solved.get("wall_s"),
        "solve_steps": solved.get("steps"),
        "total_wall_s": total,
        "eval": score,
    }


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if len(present) == len(values) and present else None


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "time_to_solve.json"))
    parser.add_argument(
        "--strict", action="store_true", help="asynctrainer with strict_on_policy (no acting during updates)"
    )
    parser.add_argument("--readme", action="store_true", help="rewrite README's results table from this run")
    parser.add_argument("--worker", choices=["asynctrainer", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = run_asynctrainer if args.worker == "asynctrainer" else run_sb3
        print(json.dumps(run(args.seed, args.steps, args.strict)))
        return
    runs: dict[str, list[dict[str, Any]]] = {"asynctrainer": [], "sb3": []}
    for seed in args.seeds:
        for name in ("asynctrainer", "sb3") if seed % 2 == 0 else ("sb3", "asynctrainer"):
            cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed), "--steps", str(args.steps)]
            cmd += ["--strict"] if args.strict else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            result = {"seed": seed, **json.loads(out)}
            runs[name].append(result)
            print(f"{name:<13} seed {seed}: {result}", flush=True)
    table = {}
    for name, rs in runs.items():
        table[name] = {
            "solve_wall_s": median([r["solve_wall_s"] for r in rs]),
            "solve_steps": median([r["solve_steps"] for r in rs]),
            "total_wall_s": median([r["total_wall_s"] for r in rs]),
            "eval": median([r["eval"] for r in rs]),
        }
    a, b = table["asynctrainer"], table["sb3"]
    ratio = {k: (a[k] / b[k] if a[k] is not None and b[k] else None) for k in a}
    print()
    print(f"CartPole-v1, {len(args.seeds)} seeds, medians ({platform.processor() or platform.machine()})")
    print(f"{'':<16}{'s to 475':>10}{'steps to 475':>14}{'s for 100k':>12}{'eval (20 ep)':>14}")
    for name, row in (("asynctrainer", a), ("SB3", b), ("ratio a/SB3", ratio)):
        spec, steps_spec = (".2f", ".2f") if name.startswith("ratio") else (".1f", ".0f")
        print(
            f"{name:<16}{fmt(row['solve_wall_s'], spec):>10}{fmt(row['solve_steps'], steps_spec):>14}"
            f"{fmt(row['total_wall_s'], spec):>12}{fmt(row['eval'], spec):>14}"
        )
    versions = {}
    for pkg in ("asynctrainer", "tensorflow-cpu", "stable-baselines3", "torch", "gymnasium", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": __import__("os").cpu_count(), "versions": versions}
    out.write_text(json.dumps({"meta": meta, "runs": runs, "medians": table, "ratio": ratio}, indent=2))
    print(f"wrote {out}")
    if args.readme:
        write_readme_table(table, ratio, len(args.seeds))


def write_readme_table(table: dict[str, dict[str, Any]], ratio: dict[str, Any], seeds: int) -> None:
    """Replace the table between README's time_to_solve markers with this run's medians."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    begin, end = "<!-- time_to_solve:begin -->\n", "\n<!-- time_to_solve:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)

    def row(name: str, r: dict[str, Any], spec: str, steps_spec: str) -> str:
        cells = [fmt(r["solve_wall_s"], spec), fmt(r["solve_steps"], steps_spec), fmt(r["total_wall_s"], spec)]
        return f"| {name} | " + " | ".join([*cells, fmt(r["eval"], spec)]) + " |"

    lines = [
        f"| CartPole-v1, medians of {seeds} seeds | s to rolling-100 ≥ 475 | steps to 475 | s for 100k steps "
        "| deterministic eval (20 ep) |",
        "|---|---|---|---|---|",
        row("asynctrainer PPO", table["asynctrainer"], ".1f", ",.0f"),
        row("Stable-Baselines3 PPO", table["sb3"], ".1f", ",.0f"),
        row("ratio", ratio, ".2f", ".2f"),
    ]
    readme.write_text(head + begin + "\n".join(lines) + end + tail, encoding="utf-8")
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
