"""The on-disk checkpoint format and its commit protocol, without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asynctrainer.checkpoints import format as fmt
from asynctrainer.checkpoints.format import (
    MANIFEST,
    cleanup_temporaries,
    list_checkpoints,
    load_arrays,
    read_manifest,
    remove_checkpoint,
    save_arrays,
    write_checkpoint,
)
from asynctrainer.errors import CheckpointLoadError, CheckpointSaveError
from asynctrainer.files import atomic_write_bytes

ARRAYS: dict[str, np.ndarray] = {
    "weights/actor_0/kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
    "optimizer/000": np.array([7], np.int64),
    "trainer/reward_buffer": np.array([1.5, -2.0]),
}


def commit(parent: Path, step: int, behavior: str = "Walker", **arrays: np.ndarray) -> Path:
    data = dict(ARRAYS, **{f"extra/{k}": v for k, v in arrays.items()})
    return write_checkpoint(
        parent,
        behavior,
        step,
        {"state.npz": lambda p: save_arrays(p, data), "notes.txt": lambda p: p.write_text(f"step {step}")},
        {"version": 3},
    )


def temporaries(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if fmt.TMP_MARK in p.name]


def test_import_needs_no_tensorflow() -> None:
    code = "import sys, asynctrainer.checkpoints.format; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_committed_checkpoint_verifies_and_is_listed(tmp_path: Path) -> None:
    path = commit(tmp_path, 300)
    assert path == tmp_path / "Walker-300"
    manifest = read_manifest(path)
    assert manifest["format"] == fmt.FORMAT
    assert manifest["step"] == 300 and manifest["behavior"] == "Walker" and manifest["version"] == 3
    assert set(manifest["files"]) == {"state.npz", "notes.txt"}
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size
    loaded = load_arrays(path / "state.npz")
    assert set(loaded) == set(ARRAYS)
    for key, value in ARRAYS.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype
    [info] = list_checkpoints(tmp_path)
    assert (info.behavior, info.step, info.path) == ("Walker", 300, path)
    assert temporaries(tmp_path) == []


def test_checkpoints_are_listed_oldest_step_first_and_by_behavior(tmp_path: Path) -> None:
    for step in (1000, 20, 300):
        commit(tmp_path, step)
    commit(tmp_path, 50, behavior="Other-Thing")
    assert [c.step for c in list_checkpoints(tmp_path, "Walker")] == [20, 300, 1000]
    assert [(c.behavior, c.step) for c in list_checkpoints(tmp_path, "Other-Thing")] == [("Other-Thing", 50)]
    assert len(list_checkpoints(tmp_path)) == 4
    assert list_checkpoints(tmp_path / "missing") == []


def test_directories_without_a_valid_manifest_are_not_checkpoints(tmp_path: Path) -> None:
    commit(tmp_path, 100)
    no_manifest = commit(tmp_path, 200)
    (no_manifest / MANIFEST).unlink()
    bad_manifest = commit(tmp_path, 300)
    (bad_manifest / MANIFEST).write_text("{ not json")
    (tmp_path / "Walker-400").mkdir()  # a directory that was never committed
    hidden = commit(tmp_path, 500)
    hidden.rename(tmp_path / ".Walker-500")
    (tmp_path / "notes-600").write_text("a file, not a directory")
    (tmp_path / "no_step_here").mkdir()
    assert [c.step for c in list_checkpoints(tmp_path, "Walker")] == [100]


def test_a_truncated_file_names_the_file(tmp_path: Path) -> None:
    path = commit(tmp_path, 100)
    target = path / "state.npz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointLoadError) as info:
        read_manifest(path)
    assert str(target) in str(info.value) and info.value.path == str(target)
    assert "corrupt" in str(info.value)


def test_a_corrupted_file_of_the_same_size_names_the_file(tmp_path: Path) -> None:
    path = commit(tmp_path, 100)
    target = path / "state.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointLoadError) as info:
        read_manifest(path)
    assert info.value.path == str(target) and str(target) in str(info.value)
    # Without verification only the manifest is read.
    assert read_manifest(path, verify=False)["step"] == 100


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = commit(tmp_path, 100)
    (path / "notes.txt").unlink()
    with pytest.raises(CheckpointLoadError) as info:
        read_manifest(path)
    assert info.value.path == str(path / "notes.txt")
    assert str(path / "notes.txt") in str(info.value) and "missing" in str(info.value)


def test_a_missing_manifest_names_the_manifest(tmp_path: Path) -> None:
    path = commit(tmp_path, 100)
    (path / MANIFEST).unlink()
    with pytest.raises(CheckpointLoadError) as info:
        read_manifest(path)
    assert info.value.path == str(path / MANIFEST)
    assert "incomplete" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["", "{ not json", "[1, 2]", json.dumps({"format": fmt.FORMAT, "step": 1})],
    ids=["empty", "not json", "not an object", "no files"],
)
def test_a_corrupt_manifest_names_the_manifest(tmp_path: Path, text: str) -> None:
    path = commit(tmp_path, 100)
    (path / MANIFEST).write_text(text)
    with pytest.raises(CheckpointLoadError) as info:
        read_manifest(path)
    assert info.value.path == str(path / MANIFEST)
    assert str(path / MANIFEST) in str(info.value) and "corrupt" in str(info.value)
    assert list_checkpoints(tmp_path) == []


def test_a_failing_writer_commits_nothing_and_leaves_no_temporary(tmp_path: Path) -> None:
    commit(tmp_path, 100)

    def broken(p: Path) -> None:
        p.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(CheckpointSaveError) as info:
        write_checkpoint(tmp_path, "Walker", 200, {"a.npz": broken}, {})
    assert "Walker-200" in str(info.value) and "disk full" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert [c.step for c in list_checkpoints(tmp_path)] == [100]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Walker-100"]


def test_crash_injection_before_the_manifest_commits_nothing(tmp_path: Path) -> None:
    commit(tmp_path, 100)

    def crash() -> None:
        raise RuntimeError("injected crash")

    with pytest.raises(CheckpointSaveError):
        write_checkpoint(tmp_path, "Walker", 200, {"a.txt": lambda p: p.write_text("x")}, {}, fail_before_commit=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Walker-100"]
    read_manifest(tmp_path / "Walker-100")


def test_an_interrupt_during_the_write_is_re_raised_as_is_and_cleans_up(tmp_path: Path) -> None:
    def interrupted(p: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, "Walker", 200, {"a.txt": interrupted}, {})
    assert list(tmp_path.iterdir()) == []


def test_saving_the_same_step_again_replaces_it_without_leftovers(tmp_path: Path) -> None:
    first = commit(tmp_path, 100, marker=np.array([1]))
    second = commit(tmp_path, 100, marker=np.array([2]))
    assert first == second
    np.testing.assert_array_equal(load_arrays(second / "state.npz")["extra/marker"], [2])
    read_manifest(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Walker-100"]


def test_a_crash_while_replacing_a_step_never_loses_the_committed_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(tmp_path, 100, marker=np.array([1]))
    real_rename = os.rename
    calls: list[tuple[str, str]] = []

    def rename(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the old one is aside, the new one not yet in place: "crash" here
            raise SystemExit("killed")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(SystemExit):
        commit(tmp_path, 100, marker=np.array([2]))
    monkeypatch.undo()
    assert calls[0][0] == "Walker-100" and fmt.REPLACED_MARK in calls[0][1]
    # What a SIGKILL would leave: the committed checkpoint moved aside (the new temporary was
    # removed by the handler here; a real kill leaves it too, and cleanup removes it).
    assert list_checkpoints(tmp_path) == []
    (tmp_path / f".Walker-100{fmt.TMP_MARK}deadbeef").mkdir()
    cleanup_temporaries(tmp_path)
    [info] = list_checkpoints(tmp_path)
    read_manifest(info.path)
    np.testing.assert_array_equal(load_arrays(info.path / "state.npz")["extra/marker"], [1])
    assert temporaries(tmp_path) == []


def test_cleanup_removes_leftovers_and_keeps_checkpoints(tmp_path: Path) -> None:
    kept = commit(tmp_path, 100)
    leftovers = [
        tmp_path / f".Walker-200{fmt.TMP_MARK}0a1b2c3d",  # a save killed before its rename
        tmp_path / f".Walker-50{fmt.REMOVED_MARK}0a1b2c3d",  # a prune killed mid-delete
        tmp_path / f".Walker-100{fmt.REPLACED_MARK}0a1b2c3d",  # replaced, and the new one is in place
    ]
    for d in leftovers:
        d.mkdir()
        (d / "state.npz").write_bytes(b"partial")
    (leftovers[2] / MANIFEST).write_text("{}")
    stray = tmp_path / f".Walker.onnx{fmt.TMP_MARK}12345678"  # an atomic file write killed midway
    stray.write_bytes(b"x")
    removed = cleanup_temporaries(tmp_path)
    assert sorted(removed) == sorted([*leftovers, stray])
    assert list(tmp_path.iterdir()) == [kept]
    read_manifest(kept)
    assert cleanup_temporaries(tmp_path) == []
    assert cleanup_temporaries(tmp_path / "missing") == []


def test_remove_checkpoint_unlists_it_at_once(tmp_path: Path) -> None:
    path = commit(tmp_path, 100)
    remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []
    remove_checkpoint(path)  # already gone: nothing to do


def test_atomic_write_replaces_the_content(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "status.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_atomic_write_keeps_the_old_content_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    target = tmp_path / "status.json"
    atomic_write_bytes(target, b"old content")

    def fail(*args: object) -> None:
        raise OSError(f"{where} failed")

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    elif where == "replace":
        monkeypatch.setattr(os, "replace", fail)
    data: object = b"new content" if where != "write" else "not bytes"  # a str makes f.write raise
    with pytest.raises((OSError, TypeError)):
        atomic_write_bytes(target, data)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert list(tmp_path.iterdir()) == [target]


def test_array_names_may_not_hide_a_slash(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="__"):
        save_arrays(tmp_path / "a.npz", {"weights/a__b": np.zeros(1)})
    with pytest.raises(CheckpointSaveError):
        write_checkpoint(tmp_path, "W", 1, {"a.npz": lambda p: save_arrays(p, {"x__y": np.zeros(1)})}, {})
    assert list(tmp_path.iterdir()) == []
