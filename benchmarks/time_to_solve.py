"""Time to solve CartPole: asynctrainer PPO vs Stable-Baselines3 PPO, side by side.

Two tasks, both with the RL Zoo's tuned CartPole settings (8 envs, n_steps 32, batch 256, 20
epochs, γ 0.98, λ 0.8, linear lr 1e-3 and clip 0.2, no entropy bonus):

- ``cartpole``: CartPole-v1, ``examples/cartpole_ppo.yaml`` against SB3's ``PPO``;
- ``no-velocity``: CartPole-v1 without its velocities (``examples/cartpole_no_velocity.py``,
  partially observed), ``examples/cartpole_memory_ppo.yaml`` (an LSTM, ``memory_size`` 128 =
  SB3's 64 hidden units times two for h and c, sequences of 32) against SB3-contrib's
  ``RecurrentPPO`` with the Zoo's ``ppo_lstm`` settings for the same task (an LSTM of 64 in
  the actor and the critic, observations and rewards normalised).

Each run is its own subprocess, asynctrainer and SB3 alternating, so both meet the same
machine state. For each run: wall seconds and env steps until the rolling-100 training return
first reaches 475, wall seconds for the whole budget, and a deterministic 20-episode
evaluation of the final policy.

    pip install -e ".[cpu,bench]"   # SB3 (and SB3-contrib) and a pinned CPU torch
    python benchmarks/time_to_solve.py [--task cartpole] [--seeds 0 1 2] [--steps 100000] [--readme]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from evaluation import evaluate

ROOT = Path(__file__).resolve().parent.parent
TARGET = 475.0
N_ENVS = 8


@dataclass(frozen=True)
class Task:
    title: str  #: the README table's first cell
    config: str  #: asynctrainer's config under examples/
    memory: bool  #: a recurrent policy (SB3-contrib's RecurrentPPO)
    marker: str  #: README's markers around the table
    steps: int  #: the default budget

    def make_env(self) -> str | Callable[[], Any]:
        """What both frameworks build their envs from: an id or a function."""
        if not self.memory:
            return "CartPole-v1"
        if str(ROOT / "examples") not in sys.path:
            sys.path.insert(0, str(ROOT / "examples"))
        from cartpole_no_velocity import make_env

        return make_env  # type: ignore[no-any-return]


TASKS = {
    "cartpole": Task("CartPole-v1", "cartpole_ppo.yaml", False, "time_to_solve", 100_000),
    "no-velocity": Task("CartPole-v1 without velocities", "cartpole_memory_ppo.yaml", True, "memory_to_solve", 200_000),
}


def eval_episodes(task: Task, act: Any, seed: int, start: Callable[[], None] | None = None) -> float:
    return evaluate(task.make_env(), act, 10_000 + seed * 100, 20, start)


def run_asynctrainer(task: Task, seed: int, steps: int, strict: bool = False) -> dict[str, Any]:
    import anyio
    import numpy as np

    from asynctrainer import Runner
    from asynctrainer.envs.gymnasium_env import GymnasiumEnv
    from asynctrainer.nn.tf_setup import keras
    from asynctrainer.settings import load_run_settings, run_settings_from_dict

    keras()  # import the framework before the clock starts, as SB3's torch is imported before its clock
    data = load_run_settings(ROOT / "examples" / task.config).to_yaml_dict()
    data["behaviors"]["CartPole"]["max_steps"] = steps
    data["behaviors"]["CartPole"]["strict_on_policy"] = strict
    settings = run_settings_from_dict(data)
    solved: dict[str, float] = {}

    async def main() -> Any:
        env = GymnasiumEnv(task.make_env(), N_ENVS, seed=seed, behavior_name="CartPole")
        runner = Runner(settings, env, seed=seed, stats_writers=[])
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
    memory: list[Any] = [None]

    def forget() -> None:
        memory[0] = np.zeros((1, snapshot.memory_size), np.float32) if snapshot.memory_size else None

    def act(o: Any) -> int:
        out = snapshot.act(o[None], deterministic=True, rng=rng, memories=memory[0])
        memory[0] = out.memories
        return int(out.discrete[0, 0])

    return {
        "solve_wall_s": solved.get("wall_s"),
        "solve_steps": solved.get("steps"),
        "total_wall_s": total,
        "eval": eval_episodes(task, act, seed, forget),
    }


def run_sb3(task: Task, seed: int, steps: int, strict: bool = False) -> dict[str, Any]:
    import numpy as np
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

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
    env = make_vec_env(task.make_env(), n_envs=N_ENVS, seed=seed)
    zoo = dict(
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
    if task.memory:  # the Zoo's ppo_lstm settings for CartPoleNoVel-v1
        import torch
        from sb3_contrib import RecurrentPPO

        env = VecNormalize(env, gamma=0.98)
        kwargs = dict(
            ortho_init=False,
            activation_fn=torch.nn.ReLU,
            lstm_hidden_size=64,
            enable_critic_lstm=True,
            net_arch=dict(pi=[64], vf=[64]),
        )
        model: Any = RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=kwargs, **zoo)
    else:
        from stable_baselines3 import PPO

        model = PPO("MlpPolicy", env, **zoo)
    model.learn(steps, callback=Solve())
    total = time.perf_counter() - start
    state: list[Any] = [None, True]  # the LSTM's state, and whether an episode starts

    def forget() -> None:
        state[:] = [None, True]

    def act(o: Any) -> int:
        if task.memory:
            o = env.normalize_obs(o)
        action, state[0] = model.predict(o, state=state[0], episode_start=np.array([state[1]]), deterministic=True)
        state[1] = False
        return int(action)

    return {
        "solve_wall_s": solved.get("wall_s"),
        "solve_steps": solved.get("steps"),
        "total_wall_s": total,
        "eval": eval_episodes(task, act, seed, forget),
    }


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if len(present) == len(values) and present else None


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="cartpole")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="the budget (default: 100k for cartpole, 200k for no-velocity)")
    parser.add_argument("--out", help="JSON (default: benchmarks/out/time_to_solve[-TASK].json)")
    parser.add_argument(
        "--strict", action="store_true", help="asynctrainer with strict_on_policy (no acting during updates)"
    )
    parser.add_argument("--readme", action="store_true", help="rewrite README's results table from this run")
    parser.add_argument("--worker", choices=["asynctrainer", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    task = TASKS[args.task]
    steps = args.steps or task.steps
    if args.worker:
        run = run_asynctrainer if args.worker == "asynctrainer" else run_sb3
        print(json.dumps(run(task, args.seed, steps, args.strict)))
        return
    runs: dict[str, list[dict[str, Any]]] = {"asynctrainer": [], "sb3": []}
    for seed in args.seeds:
        for name in ("asynctrainer", "sb3") if seed % 2 == 0 else ("sb3", "asynctrainer"):
            cmd = [sys.executable, __file__, "--worker", name, "--task", args.task, "--seed", str(seed)]
            cmd += ["--steps", str(steps)]
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
    print(f"{task.title}, {len(args.seeds)} seeds, medians ({platform.processor() or platform.machine()})")
    print(f"{'':<16}{'s to 475':>10}{'steps to 475':>14}{f's for {steps // 1000}k':>12}{'eval (20 ep)':>14}")
    for name, row in (("asynctrainer", a), ("SB3", b), ("ratio a/SB3", ratio)):
        spec, steps_spec = (".2f", ".2f") if name.startswith("ratio") else (".1f", ".0f")
        print(
            f"{name:<16}{fmt(row['solve_wall_s'], spec):>10}{fmt(row['solve_steps'], steps_spec):>14}"
            f"{fmt(row['total_wall_s'], spec):>12}{fmt(row['eval'], spec):>14}"
        )
    versions = {}
    for pkg in ("asynctrainer", "tensorflow-cpu", "stable-baselines3", "sb3-contrib", "torch", "gymnasium", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    suffix = "" if args.task == "cartpole" else f"-{args.task}"
    out = Path(args.out or ROOT / "benchmarks" / "out" / f"time_to_solve{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": __import__("os").cpu_count(), "versions": versions}
    out.write_text(json.dumps({"meta": meta, "runs": runs, "medians": table, "ratio": ratio}, indent=2))
    print(f"wrote {out}")
    if args.readme:
        write_readme_table(task, steps, table, ratio, len(args.seeds))


def write_readme_table(
    task: Task, steps: int, table: dict[str, dict[str, Any]], ratio: dict[str, Any], seeds: int
) -> None:
    """Replace the table between README's markers for ``task`` with this run's medians."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    begin, end = f"<!-- {task.marker}:begin -->\n", f"\n<!-- {task.marker}:end -->"
    if begin not in text:
        print(f"README has no {task.marker} markers: not updated")
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)

    def row(name: str, r: dict[str, Any], spec: str, steps_spec: str) -> str:
        cells = [fmt(r["solve_wall_s"], spec), fmt(r["solve_steps"], steps_spec), fmt(r["total_wall_s"], spec)]
        return f"| {name} | " + " | ".join([*cells, fmt(r["eval"], spec)]) + " |"

    ours, theirs = (
        ("asynctrainer PPO + memory", "SB3-contrib RecurrentPPO")
        if task.memory
        else ("asynctrainer PPO", "Stable-Baselines3 PPO")
    )
    lines = [
        f"| {task.title}, medians of {seeds} seeds | s to rolling-100 ≥ 475 | steps to 475 "
        f"| s for {steps // 1000}k steps | deterministic eval (20 ep) |",
        "|---|---|---|---|---|",
        row(ours, table["asynctrainer"], ".1f", ",.0f"),
        row(theirs, table["sb3"], ".1f", ",.0f"),
        row("ratio", ratio, ".2f", ".2f"),
    ]
    readme.write_text(head + begin + "\n".join(lines) + end + tail, encoding="utf-8")
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
