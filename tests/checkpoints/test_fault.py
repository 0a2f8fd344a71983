"""Fault tests of the real CLI: SIGKILL at random moments (many during saves), then ``--resume``; SIGINT.

Every process start imports TensorFlow (seconds), so the kills are spread over one long test
that keeps one run alive across all of them, and the moments are drawn from a seeded RNG.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asynctrainer.checkpoints.format import TMP_MARK, list_checkpoints, read_manifest
from asynctrainer.runtime.snapshot import PolicySnapshot

ROOT = Path(__file__).resolve().parents[2]
BEHAVIOR = "CartPole"
CONFIG = """
behaviors:
  CartPole:
    trainer_type: ppo
    hyperparameters: {batch_size: 32, buffer_size: 64, learning_rate: 3.0e-4}
    network_settings: {hidden_units: 16, num_layers: 1}
    max_steps: 10000000
    summary_freq: 100
    time_horizon: 32
    checkpoint_interval: 200
    keep_checkpoints: 3
"""
KEEP = 3
KILLS = 20
RESUMED = re.compile(r"^CartPole: Resumed from (?P<path>.+) \(step (?P<step>\d+)\)\.$")


@dataclass
class Trainee:
    """One ``asynctrainer-learn`` process, its output read line by line in a thread."""

    proc: subprocess.Popen[str]
    started: float
    lines: list[str] = field(default_factory=list)
    training: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if ". Step: " in line:
                self.training.set()

    def resumed(self) -> tuple[Path, int] | None:
        """Where the process said it resumed from: (checkpoint, step)."""
        for m in map(RESUMED.match, list(self.lines)):
            if m is not None:
                return Path(m["path"]), int(m["step"])
        return None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.wait(30)

    _reader: threading.Thread = field(init=False)


def start(tmp_path: Path, *extra: str) -> Trainee:
    cfg = tmp_path / "config.yaml"
    if not cfg.exists():
        cfg.write_text(CONFIG)
    args = [sys.executable, "-m", "asynctrainer.cli", str(cfg), "--env", "CartPole-v1"]
    args += ["--results-dir", str(tmp_path / "results"), "--run-id", "run", "--seed", "7", *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    trainee = Trainee(proc, time.monotonic())
    trainee._reader = threading.Thread(target=trainee.read, daemon=True)
    trainee._reader.start()
    return trainee


def temporaries(run: Path) -> set[Path]:
    return {p for p in run.rglob("*") if TMP_MARK in p.name or p.name.endswith(".tmp")}


def wait_until(predicate: object, timeout: float, what: str, trainee: Trainee) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert trainee.proc.poll() is None, f"the trainer exited ({trainee.proc.returncode}):\n{trainee.output}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{trainee.output}"
        time.sleep(0.01)


def check_onnx(path: Path, snapshot: PolicySnapshot) -> None:
    import onnxruntime as ort

    from asynctrainer.export.onnx import onnx_feed

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    outputs = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, onnx_feed(snapshot, [obs])), strict=True)
    )
    expected = snapshot.act([obs], deterministic=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(outputs["deterministic_discrete_actions"][:, 0], np.asarray(expected.discrete)[:, 0])


def test_sigkill_at_random_moments_then_resume_never_loses_a_committed_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "results" / "run"
    checkpoints = run / BEHAVIOR / "checkpoints"
    rng = np.random.default_rng(20240611)
    began = time.monotonic()

    trainee = start(tmp_path)
    # The first kill needs something to resume from: wait for the first committed checkpoint.
    wait_until(lambda: list_checkpoints(checkpoints, BEHAVIOR), 120, "a first checkpoint", trainee)

    newest_step = 0
    kills = kills_in_startup = 0
    kills_in_save = dict.fromkeys(["startup", "aimed", "training"], 0)
    for i in range(KILLS):
        # Three kinds of moments, in a seeded order: anywhere in training (which is more than a
        # third saving, with a save every 200 steps), aimed at a save (kill as soon as a save's
        # temporary directory shows), and anywhere in the start-up (import, restore, clean-up).
        mode = ("startup", "aimed", "training", "training")[i % 4]
        if mode == "startup":
            time.sleep(max(0.0, trainee.started + rng.uniform(0.5, 4.0) - time.monotonic()))
            if not trainee.training.is_set():
                kills_in_startup += 1
        else:
            wait_until(trainee.training.is_set, 120, "training to start", trainee)
            time.sleep(rng.uniform(0.05, 1.5) if mode == "training" else rng.uniform(0.0, 0.3))
            if mode == "aimed":
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not any(TMP_MARK in p.name for p in checkpoints.iterdir()):
                    time.sleep(0.0005)
        assert trainee.proc.poll() is None, f"the trainer exited ({trainee.proc.returncode}):\n{trainee.output}"
        trainee.kill()
        kills += 1

        # What the kill left: a save cut short leaves temporaries; committed checkpoints are whole.
        left = temporaries(run)
        kills_in_save[mode] += bool(left)
        committed = list_checkpoints(checkpoints, BEHAVIOR)
        assert committed, f"kill {i} ({mode}) left no committed checkpoint"
        for c in committed:
            read_manifest(c.path)  # verifies every file's size and sha256
        newest = committed[-1]
        assert newest.step >= newest_step, f"kill {i}: newest checkpoint went back to {newest.step} from {newest_step}"
        newest_step = newest.step

        # After the last kill, the run is finished: it trains 300 more steps and ends normally.
        last = i == KILLS - 1
        trainee = start(tmp_path, "--resume", *(["--max-steps", str(newest.step + 300)] if last else []))
        wait_until(trainee.resumed, 120, "the resume", trainee)
        assert trainee.resumed() == (newest.path, newest.step), trainee.output
        # The temporaries are removed at start, before the restore.
        survived = {p for p in left if TMP_MARK in p.name and p.exists()}
        assert not survived, f"temporaries survived the restart: {survived}"

    assert trainee.wait(120) == 0, trainee.output
    trained = re.search(r"CartPole: trained (\d+) steps", trainee.output)
    assert trained is not None, trainee.output
    final_step = int(trained[1])
    assert final_step > newest_step + 300

    snapshot = PolicySnapshot.load(run / f"{BEHAVIOR}.npz")
    assert snapshot.step == final_step
    check_onnx(run / f"{BEHAVIOR}.onnx", snapshot)
    kept = list_checkpoints(checkpoints, BEHAVIOR)
    assert [c.step for c in kept][-1] == final_step and len(kept) == KEEP
    for c in kept:
        read_manifest(c.path)
    onnx_steps = {int(p.stem.rsplit("-", 1)[1]) for p in (run / BEHAVIOR).glob(f"{BEHAVIOR}-*.onnx")}
    assert final_step in onnx_steps and onnx_steps <= {c.step for c in kept}
    status = json.loads((run / "run_logs" / "training_status.json").read_text())[BEHAVIOR]
    assert [e["auxillary_file_paths"][0] for e in status["checkpoints"]] == [str(c.path) for c in kept]
    assert status["final_checkpoint"]["steps"] == final_step
    assert temporaries(run) == set()

    elapsed = time.monotonic() - began
    report = (
        f"{kills} kills, {sum(kills_in_save.values())} with a save cut short {kills_in_save}, "
        f"{kills_in_startup} before training started; newest step {newest_step}, final step {final_step}, "
        f"{elapsed:.0f} s"
    )
    print(report)
    assert kills >= 20
    assert sum(kills_in_save.values()) >= 3, report


def test_sigint_stops_cleanly_and_writes_the_final_model(tmp_path: Path) -> None:
    trainee = start(tmp_path)
    wait_until(trainee.training.is_set, 120, "the first summary line", trainee)
    trainee.proc.send_signal(signal.SIGINT)
    assert trainee.wait(60) == 130, trainee.output  # stopped by SIGINT, after its final save
    assert "Please wait while the model is saved" in trainee.output
    run = tmp_path / "results" / "run"
    trained = re.search(r"CartPole: trained (\d+) steps", trainee.output)
    assert trained is not None, trainee.output
    snapshot = PolicySnapshot.load(run / f"{BEHAVIOR}.npz")
    assert snapshot.step == int(trained[1])
    check_onnx(run / f"{BEHAVIOR}.onnx", snapshot)
    newest = list_checkpoints(run / BEHAVIOR / "checkpoints", BEHAVIOR)[-1]
    assert newest.step == snapshot.step
    read_manifest(newest.path)
    assert temporaries(run) == set()
