"""asynctrainer against ML-Agents itself (release 22: mlagents 1.1.0, PyTorch), side by side on the same YAML.

Each run is a process of its own, timed from just before it is spawned to its exit (imports,
training, checkpoints and the ONNX export included), the two trainers alternating seed by
seed so both meet the same machine state:

- asynctrainer: ``asynctrainer-learn CONFIG --env vs_envs:make_env --seed S`` as users run it;
- ML-Agents: ``mlagents_worker.py`` in a venv of its own, which this script builds the first
  time (``--venv``, default ``benchmarks/out/mlagents-venv``, ignored by git: ML-Agents pins
  numpy < 1.24 and protobuf 3, which TensorFlow 2.21 cannot share).

Both train the same env objects (``vs_envs``): CartPole-v1 on ``examples/cartpole_ppo.yaml``
(8 copies, 100k steps), and ML-Agents' SimpleEnvironment, 1-D discrete and continuous, on
ML-Agents' own test config for it (3000 steps). Per case and trainer, medians over the seeds
of: wall seconds until the rolling mean return first reached the target (475 over 100
episodes; SimpleEnvironment 0.9 over 20), agent steps until then, seconds for the whole run,
of which start-up (spawn to the env's first reset) and the end (the env closed to exit: final
checkpoint, ONNX export, writers), the mean return of the last episodes (100;
SimpleEnvironment 5, whose ML-Agents bar is 0.9), and how many runs reached the target. The
ratio row is ML-Agents / asynctrainer.

    python benchmarks/vs_mlagents.py [--seeds 1 2 3] [--cases cartpole simple_discrete simple_continuous] [--readme]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from asynctrainer.testing.settings import dummy_ppo_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_VENV = HERE / "out" / "mlagents-venv"
DEFAULT_OUT = HERE / "out" / "vs_mlagents.json"
TRAINERS = ("asynctrainer", "mlagents")
CASES = ("cartpole", "simple_discrete", "simple_continuous")

#: ML-Agents 1.1.0's working set on Python 3.11 (installed with --no-deps: its own metadata asks
#: for Python <= 3.10.12 and for pins that conflict). numpy < 1.24 for np.float / np.long,
#: protobuf 3 for its generated code, setuptools < 81 for pkg_resources, onnx 1.15 for its export.
#: anyio and pydantic let it import asynctrainer's env modules (``vs_envs``).
MLAGENTS = ["mlagents==1.1.0", "mlagents-envs==1.1.0"]
MLAGENTS_PINS = [
    "absl-py==2.5.1",
    "attrs==26.1.0",
    "cattrs==1.5.0",
    "cloudpickle==3.1.3",
    "Farama-Notifications==0.0.6",
    "filelock==4.3.2",
    "fsspec==2026.9.0",
    "grpcio==1.85.3",
    "gymnasium==1.4.0",
    "h5py==3.16.0",
    "Jinja2==3.1.6",
    "Markdown==3.11.3",
    "MarkupSafe==3.0.4",
    "mpmath==1.3.0",
    "networkx==3.6.1",
    "numpy==1.23.5",
    "onnx==1.15.0",
    "packaging==26.4",
    "pillow==13.0.0",
    "protobuf==3.20.3",
    "PyYAML==6.0.4",
    "setuptools==80.10.2",
    "sympy==1.14.0",
    "tensorboard==2.20.0",
    "tensorboard-data-server==0.7.2",
    "torch==2.13.0",
    "typing_extensions==4.16.0",
    "Werkzeug==3.1.9",
    "anyio==4.16.0",
    "sniffio",
    "idna==3.21",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
]


def ensure_venv(venv: Path) -> Path:
    """ML-Agents' venv at ``venv`` (built, or rebuilt when its pins changed); its python."""
    python = venv / "bin" / "python"
    marker = venv / "vs_mlagents_pins.txt"
    wanted = "\n".join([*MLAGENTS, *MLAGENTS_PINS])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"building ML-Agents' venv in {venv} (a few minutes) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*pip, "--ignore-requires-python", *MLAGENTS], check=True)
    subprocess.run([*pip, *MLAGENTS_PINS], check=True)
    marker.write_text(wanted)
    return python


def case_config(case: str) -> dict[str, Any]:
    """The run config both trainers get (strict_on_policy, asynctrainer's own key, left at its default)."""
    if case == "cartpole":
        config: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "cartpole_ppo.yaml").read_text())
        config.pop("env_settings", None)  # the env comes from vs_envs
        return config
    behavior = dummy_ppo_config()
    behavior.pop("strict_on_policy")
    return {"behaviors": {"1D": behavior}}


def run_once(trainer: str, case: str, seed: int, mlagents_python: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"vs-{trainer}-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump(case_config(case)))
        report = Path(tmp) / "report.jsonl"
        if trainer == "asynctrainer":
            learn = Path(sys.executable).parent / "asynctrainer-learn"
            cmd = [str(learn), str(config), "--env", "vs_envs:make_env", "--seed", str(seed)]
            cmd += ["--run-id", f"asynctrainer-{seed}", "--results-dir", str(Path(tmp) / "results")]
        else:
            assert mlagents_python is not None
            cmd = [str(mlagents_python), str(HERE / "mlagents_worker.py"), str(config), str(Path(tmp) / "results")]
            cmd.append(str(seed))
        env = {**os.environ, "VS_CASE": case, "VS_SEED": str(seed), "VS_REPORT": str(report)}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
        env["VS_SPAWN"] = repr(spawn := time.time())
        done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        wall = time.time() - spawn
        if done.returncode != 0:
            raise RuntimeError(f"{trainer} {case} seed {seed} exited {done.returncode}:\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in report.read_text().splitlines()]
    solved = next((r for r in rows if r["event"] == "solved"), None)
    closed = next(r for r in rows if r["event"] == "closed")
    started = next(r for r in rows if r["event"] == "started")
    return {
        "seed": seed,
        "solve_wall_s": solved["wall_s"] if solved else None,
        "solve_steps": solved["steps"] if solved else None,
        "total_wall_s": wall,
        "startup_s": started["wall_s"],  # spawn to the env's first reset
        "teardown_s": wall - closed["wall_s"],  # the env closed to exit (final save, export)
        "steps": closed["steps"],
        "final_mean": closed["final_mean"],
    }


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "solve_wall_s": median([r["solve_wall_s"] for r in runs]),
        "solve_steps": median([r["solve_steps"] for r in runs]),
        "total_wall_s": median([r["total_wall_s"] for r in runs]),
        "startup_s": median([r["startup_s"] for r in runs]),
        "teardown_s": median([r["teardown_s"] for r in runs]),
        "final_mean": median([r["final_mean"] for r in runs]),
        "solved": f"{sum(r['solve_wall_s'] is not None for r in runs)}/{len(runs)}",
    }


def fmt(v: Any, spec: str) -> str:
    return "—" if v is None else v if isinstance(v, str) else format(v, spec)


def table_rows(case: str, medians: dict[str, dict[str, Any]]) -> list[list[str]]:
    a, m = medians["asynctrainer"], medians["mlagents"]

    def ratio(k: str) -> float | None:
        return m[k] / a[k] if a[k] and m[k] is not None else None

    rows = []
    for name, r in (("asynctrainer", a), ("ML-Agents 1.1.0", m)):
        rows.append(
            [
                case,
                name,
                fmt(r["solve_wall_s"], ".1f"),
                fmt(r["solve_steps"], ",.0f"),
                fmt(r["total_wall_s"], ".1f"),
                f"{fmt(r['startup_s'], '.1f')} / {fmt(r['teardown_s'], '.1f')}",
                fmt(r["final_mean"], ".2f"),
                r["solved"],
            ]
        )
    rows.append(
        [
            case,
            "ML-Agents / asynctrainer",
            fmt(ratio("solve_wall_s"), ".1f") + "×",
            fmt(ratio("solve_steps"), ".2f"),
            fmt(ratio("total_wall_s"), ".1f") + "×",
            "",
            "",
            "",
        ]
    )
    return rows


HEADER = ["case", "trainer", "s to target", "steps to target", "s for the run", "of which start / end", "final mean"]
HEADER += ["solved"]


def write_readme(rows: list[list[str]], seeds: list[int]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    begin, end = "<!-- vs_mlagents:begin -->\n", "<!-- vs_mlagents:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    lines = [f"| {' | '.join(HEADER)} (medians of seeds {', '.join(map(str, seeds))}) |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    readme.write_text(head + begin + "\n".join(lines) + "\n" + end + tail, encoding="utf-8")
    print(f"updated {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="ML-Agents' venv (built when missing)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--readme", action="store_true", help="rewrite README's ML-Agents table from this run")
    args = parser.parse_args()
    mlagents_python = ensure_venv(args.venv)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {t: [] for t in TRAINERS} for c in args.cases}
    for case in args.cases:
        for i, seed in enumerate(args.seeds):
            for trainer in TRAINERS if i % 2 == 0 else TRAINERS[::-1]:
                result = run_once(trainer, case, seed, mlagents_python)
                runs[case][trainer].append(result)
                print(f"{case:<18} {trainer:<13} {json.dumps(result)}", flush=True)
    medians = {case: {t: summarise(rs) for t, rs in by.items()} for case, by in runs.items()}
    rows = [row for case in args.cases for row in table_rows(case, medians[case])]
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print(f"\nmedians of seeds {args.seeds}, whole processes ({platform.machine()}, {os.cpu_count()} cpus)")
    for r in [HEADER, *rows]:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"meta": meta, "runs": runs, "medians": medians}, indent=2))
    print(f"wrote {args.out}")
    if args.readme:
        write_readme(rows, args.seeds)


if __name__ == "__main__":
    main()
