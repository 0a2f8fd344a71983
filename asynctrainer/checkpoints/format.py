"""The on-disk checkpoint format and its commit protocol. No TensorFlow.

A checkpoint is a directory ``<behavior>-<step>/`` holding array files and, written last,
``manifest.json`` listing every file with its size and sha256. It is committed by:
write into a temporary sibling directory → fsync each file → write the manifest → fsync →
atomic rename to the final name → fsync the parent. A directory without a valid manifest
is not a checkpoint; temporaries left by a crash are removed at start.

A committed checkpoint is never changed in place: saving its step again moves it aside
first, and deleting it (pruning) renames it to a temporary first, so that a crash at any
moment leaves either the whole checkpoint or a temporary, never a manifest beside missing
files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asynctrainer.errors import CheckpointLoadError, CheckpointSaveError
from asynctrainer.files import TMP_MARK, fsync_dir, fsync_file, is_temp_name, temp_sibling

__all__ = [
    "MANIFEST",
    "CheckpointInfo",
    "cleanup_temporaries",
    "list_checkpoints",
    "load_arrays",
    "read_manifest",
    "remove_checkpoint",
    "save_arrays",
    "scan_checkpoints",
    "write_checkpoint",
]

MANIFEST = "manifest.json"
FORMAT = "asynctrainer.checkpoint/1"
#: A committed checkpoint moved aside while the same step is saved again (see write_checkpoint).
REPLACED_TAG = ".replaced"
REPLACED_MARK = REPLACED_TAG + TMP_MARK
#: A committed checkpoint moved aside to be deleted (pruning).
REMOVED_TAG = ".removed"
REMOVED_MARK = REMOVED_TAG + TMP_MARK
_NAME = re.compile(r"^(?P<behavior>.+)-(?P<step>\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    behavior: str
    step: int
    path: Path
    manifest: Mapping[str, Any]


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays as ``.npz`` (keys may contain '/', not '__'; stored without pickle)."""
    clash = [k for k in arrays if "__" in k]
    if clash:
        raise ValueError(f"array names may not contain '__' (it stands for '/' on disk): {clash}")
    safe = {k.replace("/", "__"): np.asarray(v) for k, v in arrays.items()}
    with open(path, "wb") as f:
        np.savez(f, **safe)  # type: ignore[arg-type]


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k.replace("__", "/"): data[k] for k in data.files}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(
    parent: Path,
    behavior: str,
    step: int,
    writers: Mapping[str, Callable[[Path], object]],
    meta: Mapping[str, Any],
    *,
    fail_before_commit: Callable[[], None] | None = None,
) -> Path:
    """Commit one checkpoint ``<parent>/<behavior>-<step>/`` and return its path.

    :param writers: file name → function writing that file at the given path.
    :param fail_before_commit: test hook called after the files are written and before the
        manifest (crash injection).
    :raises CheckpointSaveError: when anything fails; nothing is committed then.
    """
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / f"{behavior}-{step}"
    tmp = temp_sibling(parent / f"{behavior}-{step}")
    try:
        tmp.mkdir()
        files = {}
        for name, write in writers.items():
            target = tmp / name
            write(target)
            fsync_file(target)
            files[name] = {"size": target.stat().st_size, "sha256": _sha256(target)}
        if fail_before_commit is not None:
            fail_before_commit()
        manifest = {
            "format": FORMAT,
            "behavior": behavior,
            "step": step,
            "created": time.time(),
            "files": files,
            **meta,
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():
            # The same step saved twice (e.g. the final save right after a periodic one). A
            # directory cannot be renamed over a non-empty one, and deleting the old one in place
            # could be cut short by a crash, leaving a manifest beside missing files. So: move the
            # old one aside (atomic), move the new one in (atomic), then delete the old one. A crash
            # between the two renames is undone by cleanup_temporaries, which moves the old one back.
            aside = temp_sibling(final, REPLACED_TAG)
            os.rename(final, aside)
            os.rename(tmp, final)
            fsync_dir(parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, final)
            fsync_dir(parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):
            raise CheckpointSaveError(f"Could not save checkpoint {final}: {type(exc).__name__}: {exc}") from exc
        raise
    return final


def remove_checkpoint(path: Path) -> None:
    """Delete a committed checkpoint so that a crash midway never leaves a manifest beside missing files.

    The directory is first renamed to a temporary name (atomic: it stops being a checkpoint at
    once), then deleted; a crash in between leaves a temporary that cleanup_temporaries removes.
    """
    if not path.exists():
        return
    aside = temp_sibling(path, REMOVED_TAG)
    os.rename(path, aside)
    fsync_dir(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


def read_manifest(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """Read and (by default) verify a checkpoint's manifest.

    :raises CheckpointLoadError: naming the missing, truncated or corrupt file.
    """
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointLoadError(f"Checkpoint '{path}' is incomplete: it has no {MANIFEST}.", path=str(manifest_path))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise CheckpointLoadError(
            f"Checkpoint manifest '{manifest_path}' is corrupt: {exc}.", path=str(manifest_path)
        ) from None
    files = _manifest_files(manifest, manifest_path)
    if verify:
        for name, entry in files.items():
            f = path / name
            if not f.is_file():
                raise CheckpointLoadError(f"Checkpoint file '{f}' is missing.", path=str(f))
            if f.stat().st_size != entry["size"] or _sha256(f) != entry["sha256"]:
                raise CheckpointLoadError(
                    f"Checkpoint file '{f}' is corrupt (its size or sha256 does not match the manifest).", path=str(f)
                )
    assert isinstance(manifest, dict)
    return manifest


def _manifest_files(manifest: object, manifest_path: Path) -> dict[str, dict[str, Any]]:
    """The manifest's ``files``, checked: an object of plain file names to ``{size, sha256}`` objects."""

    def corrupt(what: str) -> CheckpointLoadError:
        return CheckpointLoadError(
            f"Checkpoint manifest '{manifest_path}' is corrupt: {what}.", path=str(manifest_path)
        )

    if not isinstance(manifest, dict):
        raise corrupt(f"it is a JSON {type(manifest).__name__}, an object is allowed")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise corrupt("its 'files' is missing or not an object of file names to {size, sha256} entries")
    for name, entry in files.items():
        if name in ("", ".", "..", MANIFEST) or Path(name).name != name or "\\" in name:
            raise corrupt(f"its 'files' names {name!r}, a path outside the checkpoint; plain file names are allowed")
        size = entry.get("size") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(sha, str):
            raise corrupt(
                f"its 'files' entry for '{name}' is {entry!r:.80}; an object with a size and a sha256 is allowed"
            )
    return files


def list_checkpoints(parent: Path, behavior: str | None = None) -> list[CheckpointInfo]:
    """Committed checkpoints under ``parent`` (those with a readable manifest), oldest step first."""
    return scan_checkpoints(parent, behavior)[0]


def scan_checkpoints(
    parent: Path, behavior: str | None = None
) -> tuple[list[CheckpointInfo], list[tuple[Path, int, CheckpointLoadError]]]:
    """:func:`list_checkpoints`, and the checkpoint directories whose manifest is there but unreadable
    (path, step, why), which are not checkpoints."""
    out: list[CheckpointInfo] = []
    unreadable: list[tuple[Path, int, CheckpointLoadError]] = []
    if not parent.is_dir():
        return out, unreadable
    for child in parent.iterdir():
        m = _NAME.match(child.name)
        if not child.is_dir() or m is None or child.name.startswith(".") or not (child / MANIFEST).is_file():
            continue
        if behavior is not None and m["behavior"] != behavior:
            continue
        try:
            manifest = read_manifest(child, verify=False)
        except CheckpointLoadError as exc:
            unreadable.append((child, int(m["step"]), exc))
            continue
        out.append(CheckpointInfo(m["behavior"], int(m["step"]), child, manifest))
    return sorted(out, key=lambda c: (c.step, c.manifest.get("created", 0.0))), sorted(unreadable)


def cleanup_temporaries(parent: Path) -> list[Path]:
    """Remove temporaries a crash left behind in ``parent``; return what was removed.

    Only names :func:`~asynctrainer.files.temp_sibling` makes are touched, and never a symlink:
    neither a symlinked ``parent`` nor a link inside it is followed or removed, so clean-up
    cannot reach outside the run. A committed checkpoint that was moved aside to be replaced
    by a new save of the same step (see :func:`write_checkpoint`) is moved back when the crash
    came before its replacement was in place, so no committed checkpoint is ever lost; it is
    not listed as removed then.
    """
    removed: list[Path] = []
    if parent.is_symlink() or not parent.is_dir():
        return removed
    for child in sorted(parent.iterdir()):
        if not is_temp_name(child.name) or child.is_symlink():
            continue
        if REPLACED_MARK in child.name and child.is_dir():
            original = parent / child.name[1 : child.name.index(REPLACED_MARK)]
            if not os.path.lexists(original) and (child / MANIFEST).is_file():
                os.rename(child, original)
                fsync_dir(parent)
                continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)  # removes links inside, never follows them
        else:
            child.unlink(missing_ok=True)
        removed.append(child)
    return removed
