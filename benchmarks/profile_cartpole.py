"""Where the wall time of ``asynctrainer-learn examples/cartpole_ppo.yaml --env CartPole-v1`` goes.

Two runs of the command, one after the other, 100k steps each:

1. plain, timed from outside: the whole process's wall time, and the Runner's own timers
   (``run_logs/timers.json``: env stepping on the loop, the update thread's ``_update_policy``);
2. under pyinstrument (``python -m pyinstrument -m asynctrainer.cli …``), which samples the main
   thread — the event loop — and splits its time into parts by the code that ran: env stepping,
   acting, trajectory building, channels, stats, checkpoints and export, and the loop waiting
   (on the update thread, mostly). pyinstrument folds import machinery into the importing code,
   so start-up is not a part of its own. The update thread is not sampled; its time is the
   timers' ``_update_policy``.

It writes ``docs/performance.md`` (the tables and the command) and JSON. Profiling slows the
loop's Python down, so the shares of the second run are indications and the first run's wall time
is the figure.

    python benchmarks/profile_cartpole.py [--steps 100000] [--doc docs/performance.md]
        [--out benchmarks/out/profile_cartpole.json]

Needs pyinstrument (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "cartpole_ppo.yaml"

#: (part, substrings of a frame's file path that put its time in that part), first match wins,
#: from the frame that ran outwards.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("env stepping (gymnasium CartPole)", ("gymnasium/",)),
    ("acting (numpy snapshot)", ("runtime/snapshot.py", "runtime/encoders.py")),
    ("trajectory building (AgentProcessor)", ("runtime/agent_processor.py", "runtime/trajectory.py")),
    ("channels and sending", ("runtime/channels.py", "anyio/streams")),
    ("stats and TensorBoard", ("runtime/stats.py", "tensorboardX")),
    ("checkpoints and ONNX export", ("checkpoints/", "export/", "onnx")),
    ("trainer bookkeeping on the loop", ("runtime/trainer.py", "ppo/")),
    ("env loop", ("runtime/env_loop.py", "envs/gymnasium_env.py")),
    ("the loop waiting (update thread, env)", ("selectors.py", "asyncio/base_events.py", "threading.py")),
    ("TensorFlow on the loop thread", ("tensorflow/", "keras/")),
]
OTHER = "other"


def command(run_dir: Path, steps: int) -> list[str]:
    where = ["--run-id", "profile", "--results-dir", str(run_dir), "--force"]
    return [str(CONFIG), "--env", "CartPole-v1", "--max-steps", str(steps), *where]


def timers(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "profile" / "run_logs" / "timers.json").read_text())
    out: dict[str, Any] = {"total": data.get("total", 0.0)}

    def walk(node: dict[str, Any], name: str) -> None:
        for child, value in node.get("children", {}).items():
            out[child] = {"total": value.get("total", 0.0), "count": value.get("count", 0)}
            walk(value, child)

    walk(data, "root")
    return out


def part_of(stack: list[str]) -> str:
    for path in reversed(stack):  # innermost first
        for part, needles in PARTS:
            if any(n in path for n in needles):
                return part
    return OTHER


def split(frame: dict[str, Any], stack: list[str], out: dict[str, float]) -> None:
    """Attribute each frame's self time to the part of its innermost recognised frame."""
    here = [*stack, frame.get("file_path", "")]
    children = frame.get("children", [])
    own = float(frame["time"]) - sum(float(c["time"]) for c in children)
    if own > 0:
        out[part_of(here)] += own
    for child in children:
        split(child, here, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "profile_cartpole.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, profiled = Path(tmp) / "plain", Path(tmp) / "profiled"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "asynctrainer.cli", *command(plain, args.steps)], check=True)
        wall = time.perf_counter() - start
        timed = timers(plain)
        report = Path(tmp) / "pyinstrument.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pyinstrument",
                "-r",
                "json",
                "-o",
                str(report),
                "-m",
                "asynctrainer.cli",
                *command(profiled, args.steps),
            ],
            check=True,
        )
        sampled = json.loads(report.read_text())
    parts: dict[str, float] = defaultdict(float)
    split(sampled["root_frame"], [], parts)
    loop_total = sum(parts.values())
    update = timed.get("_update_policy", {"total": 0.0, "count": 0})
    env_step = timed.get("env_step", {"total": 0.0, "count": 0})
    rows = sorted(parts.items(), key=lambda kv: -kv[1])
    per_update = 1000 * update["total"] / max(update["count"], 1)
    lines = [
        "# Performance: where CartPole's wall time goes",
        "",
        f"`python benchmarks/profile_cartpole.py` on {time.strftime('%Y-%m-%d')} ({platform.platform()}, "
        f"{platform.python_version()}): `asynctrainer-learn examples/cartpole_ppo.yaml --env CartPole-v1 "
        f"--max-steps {args.steps}`. Regenerate this page with the same command.",
        "",
        "## The whole process (plain run)",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| process wall time (Python start, imports, training, final save and export) | {wall:.1f} |",
        f"| the Runner's run (`timers.json` total) | {timed['total']:.1f} |",
        f"| env stepping on the loop (`env_step`, {env_step['count']} steps of all copies) | {env_step['total']:.1f} |",
        f"| policy updates in the update thread (`_update_policy`, {update['count']} updates) | "
        f"{update['total']:.1f} |",
        "",
        "The loop and the update thread run side by side (two cores), so these overlap.",
        "",
        "## The event loop's thread, by part (pyinstrument run)",
        "",
        f"Sampled {sampled['duration']:.1f} s of the main thread ({sampled['sample_count']} samples); "
        "each sample's time goes to the innermost frame it recognises.",
        "",
        "| part | seconds | share |",
        "|---|---|---|",
        *(f"| {part} | {seconds:.2f} | {seconds / loop_total:.0%} |" for part, seconds in rows),
        "",
        "## Reading",
        "",
        f"The update thread was busy {update['total']:.1f} s of the run's {timed['total']:.1f} s "
        f"({update['total'] / max(timed['total'], 1e-9):.0%}), {per_update:.0f} ms an update, "
        f"while the loop waited {parts['the loop waiting (update thread, env)'] / loop_total:.0%} of its "
        "time: the updates are the critical path, and the loop's own work (stepping, acting, building "
        "trajectories) fits beside them. Faster updates (fewer Python-side steps per update, fewer copies "
        "into the update's tensors) shorten the run; a faster loop alone would not.",
        "",
    ]
    args.doc.write_text("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"steps": args.steps, "wall": wall, "timers": timed, "loop_parts": dict(parts)},
            indent=2,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
