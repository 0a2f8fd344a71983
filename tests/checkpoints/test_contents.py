"""A checkpoint whose manifest verifies but whose contents are wrong: a CheckpointLoadError naming file and field."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer.checkpoints.format import MANIFEST, load_arrays, read_manifest, save_arrays
from asynctrainer.checkpoints.manager import CheckpointManager, find_checkpoint
from asynctrainer.checkpoints.restore import restore_trainer
from asynctrainer.errors import CheckpointLoadError
from asynctrainer.runtime.contracts import RestoreRequest
from asynctrainer.testing import make_run_settings
from asynctrainer.testing.fakes import CountingEnv, FakeTrainer

State = dict[str, np.ndarray]


def fake_trainer(step: int = 0) -> FakeTrainer:
    settings = make_run_settings(checkpoint_interval=50)
    trainer = FakeTrainer("Counter", settings.behaviors["Counter"])
    trainer.add_policy("Counter", trainer.create_policy("Counter", CountingEnv().behavior_specs["Counter"]))
    trainer._step = step
    return trainer


def rewrite(path: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file and update its manifest entry, so the manifest still verifies."""
    (path / name).write_bytes(data)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / MANIFEST).write_text(json.dumps(manifest))


def rewrite_state(path: Path, change: Callable[[State], None]) -> Path:
    state = load_arrays(path / "state.npz")
    change(state)
    scratch = path.parent / "scratch.npz"
    save_arrays(scratch, state)
    rewrite(path, "state.npz", scratch.read_bytes())
    scratch.unlink()
    return path / "state.npz"


@pytest.fixture
async def saved(tmp_path: Path) -> Path:
    """A run with one committed checkpoint of a FakeTrainer at step 100."""
    run = tmp_path / "run"
    manager = CheckpointManager(run, export_onnx=False)
    trainer = fake_trainer(100)
    trainer._reward_buffer.appendleft(3.0)
    manager.attach(trainer)
    await manager.save(trainer)
    return run


async def resume(run: Path) -> FakeTrainer:
    trainer = fake_trainer()
    await restore_trainer(trainer, RestoreRequest(run_dir=run, resume=True, initialize_from=None, init_path=None))
    return trainer


def set_field(key: str, value: Any) -> Callable[[State], None]:
    def change(state: State) -> None:
        if value is None:
            del state[key]
        else:
            state[key] = np.asarray(value)

    return change


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("trainer/step", None),
        ("trainer/step", np.zeros(0, np.int64)),
        ("trainer/step", np.array([2**62], np.int64)),
        ("trainer/step", np.array([-5], np.int64)),
        ("trainer/step", np.array([100.5])),
        ("trainer/episodes", np.array([-1], np.int64)),
        ("trainer/version", np.array([[1, 2]], np.int64)),
        ("trainer/reward_buffer", np.array([1.0, np.nan])),
        ("trainer/reward_buffer", None),
    ],
    ids=["step missing", "step empty", "step 2**62", "step -5", "step float", "episodes", "version 2-d", "nan", "rb"],
)
async def test_a_bad_trainer_field_names_the_file_and_the_field(saved: Path, key: str, value: Any) -> None:
    path = find_checkpoint(saved / "Counter", "Counter")
    state_file = rewrite_state(path, set_field(key, value))
    read_manifest(path)  # the manifest verifies
    with pytest.raises(CheckpointLoadError) as info:
        await resume(saved)
    message = str(info.value)
    assert str(state_file) in message and f"'{key}'" in message, message
    assert info.value.path == str(state_file) and info.value.exit_code == 2
    assert "\n" not in message and len(message) < 600, message


async def test_a_step_other_than_the_checkpoints_is_refused(saved: Path) -> None:
    path = find_checkpoint(saved / "Counter", "Counter")
    state_file = rewrite_state(path, set_field("trainer/step", np.array([7], np.int64)))
    with pytest.raises(CheckpointLoadError) as info:
        await resume(saved)
    assert str(state_file) in str(info.value) and "'trainer/step' is 7" in str(info.value)
    assert "step 100" in str(info.value)


async def test_an_algorithm_hook_that_fails_on_a_bad_field_is_a_load_error(saved: Path) -> None:
    path = find_checkpoint(saved / "Counter", "Counter")
    state_file = rewrite_state(path, set_field("algo/updates_finished", None))  # FakeTrainer raises KeyError
    with pytest.raises(CheckpointLoadError) as info:
        await resume(saved)
    assert str(state_file) in str(info.value) and "updates_finished" in str(info.value)


async def test_a_good_checkpoint_still_resumes(saved: Path) -> None:
    trainer = await resume(saved)
    assert trainer.step == 100 and list(trainer.reward_buffer) == [3.0]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(files=list(m["files"])),
        lambda m: m["files"].update({"state.npz": "abc"}),
        lambda m: m["files"].update({"state.npz": {"size": "12", "sha256": "x"}}),
        lambda m: m["files"].update({"../escape.txt": {"size": 1, "sha256": "00"}}),
        lambda m: m["files"].update({"/etc/hostname": {"size": 1, "sha256": "00"}}),
        lambda m: m["files"].pop("state.npz"),
    ],
    ids=["files a list", "entry a string", "size a string", "dotdot name", "absolute name", "state not listed"],
)
async def test_a_malformed_manifest_is_a_load_error_naming_it(saved: Path, change: Callable[[Any], None]) -> None:
    path = find_checkpoint(saved / "Counter", "Counter")
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointLoadError) as info:
        read_manifest(path)
        await resume(saved)
    assert str(path / MANIFEST) in str(info.value), str(info.value)
    assert "files" in str(info.value)


async def test_a_newest_checkpoint_with_an_unreadable_manifest_is_skipped_in_one_line(
    saved: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(saved, export_onnx=False, resume=True)
    trainer = fake_trainer(200)
    manager.attach(trainer)
    newest = await manager.save(trainer)
    (newest / MANIFEST).write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="asynctrainer"):
        used = find_checkpoint(saved / "Counter", "Counter")
    assert used.name == "Counter-100"
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(newest) in line and str(used) in line and "manifest" in line and "\n" not in line
