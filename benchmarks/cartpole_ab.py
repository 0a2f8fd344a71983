"""A change measured before and after in one run: the CartPole example at two git revisions.

Checks out ``--base`` (default ``HEAD~1``) into a temporary git worktree and runs
``asynctrainer-learn examples/cartpole_ppo.yaml --env CartPole-v1`` from it and from this
checkout, alternating, ``--runs`` times each (the machine is shared and noisy: alternating
runs see the same noise, and the ratio of the medians is the figure). Each run is the whole
process, TensorFlow's import included; beside its wall time come the Runner's timers
(``trainer_advance``: the updates as the loop awaits them; ``env_step``). Both revisions run
in this interpreter's environment, the base one first on ``PYTHONPATH``.

    python benchmarks/cartpole_ab.py [--base REV] [--runs 3] [--steps 100000]
        [--out benchmarks/results/cartpole_ab.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "examples/cartpole_ppo.yaml"


def run_once(source: Path, results: Path, steps: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    where = ["--results-dir", str(results), "--run-id", "ab", "--force", "--max-steps", str(steps)]
    command = [sys.executable, "-m", "asynctrainer.cli", str(source / CONFIG), "--env", "CartPole-v1", *where]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    data = json.loads((results / "ab" / "run_logs" / "timers.json").read_text())
    children = data.get("children", {})
    return {
        "wall_s": wall,
        "trainer_advance_s": children.get("trainer_advance", {}).get("total", 0.0),
        "env_step_s": children.get("env_step", {}).get("total", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cartpole_ab.json")
    args = parser.parse_args()
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), base_rev], cwd=ROOT, check=True)
        try:
            for i in range(args.runs):
                for name, source in (("base", worktree), ("this", ROOT)):
                    result = run_once(source, Path(tmp) / f"results_{name}", args.steps)
                    runs[name].append(result)
                    print(f"run {i + 1} {name}: {result['wall_s']:.2f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    medians = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in runs.items()}
    print(f"\nCartPole-v1, {args.steps} steps, {args.runs} alternating runs each (medians, seconds)\n")
    print("| revision | whole process | trainer_advance | env_step |\n|---|---|---|---|")
    for name, label in (("base", f"base {base_rev}"), ("this", "this checkout")):
        m = medians[name]
        print(f"| {label} | {m['wall_s']:.2f} | {m['trainer_advance_s']:.2f} | {m['env_step_s']:.2f} |")
    ratio = medians["this"]["wall_s"] / medians["base"]["wall_s"]
    print(f"\nthis / base (whole process): {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"base": base_rev, "steps": args.steps, "runs": runs, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
