"""Background checkpointing for the Runner.

Save requests (every ``checkpoint_interval`` steps, ``Trainer.save_model()``, the end of
training, cancellation) are coalesced per behavior: at most one save in flight, and any
number of requests arriving during a save cause exactly one more save after it. The state
is captured between two updates (``RLTrainer.checkpoint_state``: the loop-side fields on the
loop, the rest in the trainer's worker thread, as of one moment) and written in another
thread, so updates go on while files are written. A periodic save that fails is logged and
counted (``Checkpoints/Failed Saves``) and training goes on; a failed final save fails the run.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskStatus

from asynctrainer.checkpoints.format import (
    MANIFEST,
    CheckpointInfo,
    cleanup_temporaries,
    list_checkpoints,
    load_arrays,
    read_manifest,
    remove_checkpoint,
    save_arrays,
    scan_checkpoints,
    write_checkpoint,
)
from asynctrainer.errors import CheckpointLoadError, CheckpointSaveError, ExportError
from asynctrainer.files import atomic_write_bytes
from asynctrainer.runtime.scheduling import gil_switch_interval
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.timers import hierarchical_timer
from asynctrainer.runtime.trainer import RLTrainer

__all__ = [
    "FAILED_SAVES_STAT",
    "STATE_FILE",
    "CheckpointManager",
    "cleanup_run_directory",
    "find_checkpoint",
    "load_checkpoint_state",
]

logger = logging.getLogger("asynctrainer")
STATUS_FORMAT_VERSION = "0.3.0"
#: The stat counting a behavior's periodic saves that failed (the run went on).
FAILED_SAVES_STAT = "Checkpoints/Failed Saves"
#: The trainer state inside a checkpoint directory.
STATE_FILE = "state.npz"


def find_checkpoint(behavior_dir: Path, behavior: str) -> Path:
    """The newest committed, verified checkpoint of ``behavior`` under ``behavior_dir``.

    A newer checkpoint directory whose manifest is unreadable is no checkpoint: it is skipped,
    with one warning line naming it and the one used. A newest checkpoint that fails
    verification is reported, not silently skipped, so the user decides (the message says how
    to fall back to an earlier one).
    :raises CheckpointLoadError: when there is none or the newest is corrupt.
    """
    parent = behavior_dir / "checkpoints"
    found, unreadable = scan_checkpoints(parent, behavior)
    if not found:
        skipped = "".join(f" '{path}' is not one: {error}" for path, _, error in unreadable[-1:])
        raise CheckpointLoadError(
            f"No checkpoint of behavior '{behavior}' was found in '{parent}'.{skipped} Train a new run by removing "
            "the --resume flag, or use --force to start over.",
            path=str(parent),
        )
    newest = found[-1]
    try:
        read_manifest(newest.path)
    except CheckpointLoadError as exc:
        recover = (
            f" The previous checkpoint is '{found[-2].path}': delete '{newest.path}' to resume from it."
            if len(found) > 1
            else f" There is no earlier checkpoint: use --force to start this run over (or delete '{newest.path}')."
        )
        raise CheckpointLoadError(f"{exc}{recover}", path=exc.path) from None
    for path, step, error in unreadable:
        if step >= newest.step:
            logger.warning("Skipped checkpoint '%s' (%s); using '%s'.", path, error, newest.path)
    return newest.path


def load_checkpoint_state(path: Path, *, verified: bool = False) -> dict[str, np.ndarray]:
    """The trainer state of the checkpoint at ``path``; its manifest is verified unless ``verified``.

    :raises CheckpointLoadError: when the checkpoint is incomplete, corrupt or unreadable.
    """
    manifest = read_manifest(path, verify=not verified)
    state_file = path / STATE_FILE
    if STATE_FILE not in manifest["files"]:
        raise CheckpointLoadError(
            f"Checkpoint manifest '{path / MANIFEST}' lists no {STATE_FILE} in its 'files'; a checkpoint's "
            "state is always listed.",
            path=str(path / MANIFEST),
        )
    try:
        return load_arrays(state_file)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointLoadError(f"Checkpoint file '{state_file}' could not be read: {exc}.", path=str(path)) from exc


def cleanup_run_directory(run_dir: Path) -> list[Path]:
    """Remove the temporaries a crash left anywhere a run writes (at start).

    Done before anything is restored, so that a checkpoint a crash left moved aside (see
    :func:`~asynctrainer.checkpoints.format.cleanup_temporaries`) is back in place first.
    """
    removed: list[Path] = []
    if run_dir.is_symlink() or not run_dir.is_dir():
        return removed
    removed += cleanup_temporaries(run_dir)
    removed += cleanup_temporaries(run_dir / "run_logs")
    for child in sorted(run_dir.iterdir()):
        # A symlinked directory leads out of the run: never followed (cleanup_temporaries checks it too).
        if child.is_dir() and not child.is_symlink() and not child.name.startswith(".") and child.name != "run_logs":
            removed += cleanup_temporaries(child / "checkpoints")
            removed += cleanup_temporaries(child)
    if removed:
        logger.info("Removed %d temporary file(s) left by an interrupted save in '%s'.", len(removed), run_dir)
    return removed


class CheckpointManager:
    """Saves the trainers of one run under ``<run_dir>/<behavior>/``.

    Creating it removes the temporaries an earlier, interrupted run left in ``run_dir``.
    """

    def __init__(
        self, run_dir: Path, *, export_onnx: bool = True, resume: bool = False, switch_interval: float | None = None
    ) -> None:
        self.run_dir = run_dir
        self.export_onnx = export_onnx
        #: The GIL switch interval while a save runs (``runtime/scheduling.py``); None: left alone.
        self.switch_interval = switch_interval
        self.trainers: dict[str, RLTrainer[Any]] = {}
        self._pending: dict[str, bool] = {}
        self._wake: dict[str, anyio.Event] = {}
        #: One save in flight per behavior, the final save included.
        self._locks: dict[str, anyio.Lock] = {}
        self._limiter = anyio.CapacityLimiter(1)
        #: (behavior, step, seconds) of every committed save.
        self.saves: list[tuple[str, int, float]] = []
        #: Periodic saves that failed, per behavior.
        self.failed_saves: dict[str, int] = {}
        self._attempted: dict[str, int] = {}
        #: Test hook: called inside the write, after the files and before the manifest.
        self.fail_before_commit: Callable[[], None] | None = None
        self._status: dict[str, Any] = {}
        cleanup_run_directory(run_dir)
        status = run_dir / "run_logs" / "training_status.json"
        if resume and status.is_file():
            try:
                self._status = json.loads(status.read_text(encoding="utf-8"))
            except ValueError:
                logger.warning("Ignoring unreadable %s", status)
        self._status.setdefault("metadata", {"stats_format_version": STATUS_FORMAT_VERSION})

    def saved_lessons(self) -> dict[str, int]:
        """The lesson numbers training_status.json recorded (``{"<parameter>": {"lesson_num": n}}``)."""
        out = {}
        for key, entry in self._status.items():
            if isinstance(entry, dict) and isinstance(entry.get("lesson_num"), int):
                out[key] = int(entry["lesson_num"])
        return out

    def record_lessons(self, lessons: Mapping[str, int]) -> None:
        """Keep the curricula's lesson numbers; written to training_status.json with the next checkpoint."""
        for name, number in lessons.items():
            self._status[name] = {"lesson_num": int(number)}

    def attach(self, trainer: RLTrainer[Any]) -> None:
        name = trainer.behavior_name
        self.trainers[name] = trainer
        self._pending[name] = False
        self._wake[name] = anyio.Event()
        self._locks[name] = anyio.Lock()
        trainer.checkpoint_requester = self.request
        cleanup_temporaries(self.behavior_dir(name) / "checkpoints")
        cleanup_temporaries(self.behavior_dir(name))

    def behavior_dir(self, name: str) -> Path:
        return self.run_dir / name

    def request(self, trainer: RLTrainer[Any], step: int) -> None:
        """Ask for a save of ``trainer`` (sync; coalesced with any save in flight)."""
        name = trainer.behavior_name
        self._pending[name] = True
        self._wake[name].set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve save requests until cancelled (one worker per behavior)."""
        async with anyio.create_task_group() as tg:
            for name in self.trainers:
                tg.start_soon(self._worker, name)
            task_status.started()

    async def _worker(self, name: str) -> None:
        while True:
            await self._wake[name].wait()
            self._wake[name] = anyio.Event()
            while self._pending[name]:
                self._pending[name] = False
                trainer = self.trainers[name]
                try:
                    await self.save(trainer)
                except CheckpointSaveError as exc:
                    # A periodic save that fails costs that checkpoint, not the run: the previous
                    # one stays valid, and the next interval (or the final save) tries again.
                    self.failed_saves[name] = self.failed_saves.get(name, 0) + 1
                    trainer.stats_reporter.set_stat(FAILED_SAVES_STAT, self.failed_saves[name])
                    logger.error(
                        "%s: the checkpoint at step %d was not saved; training goes on and the next checkpoint "
                        "interval tries again. %s",
                        name,
                        self._attempted.get(name, trainer.step),
                        exc,
                    )

    async def save(self, trainer: RLTrainer[Any], *, final: bool = False) -> Path:
        """Capture the trainer between two updates, then commit a checkpoint in a thread.

        :raises CheckpointSaveError: when it could not be saved (the previous checkpoint stays valid).
        """
        name = trainer.behavior_name
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            # A save is many short file operations, each releasing the GIL: see SHORT_SWITCH_INTERVAL.
            with hierarchical_timer("save_model"), gil_switch_interval(self.switch_interval):
                start = time.perf_counter()
                self._attempted[name] = trainer.step
                state, snapshot = await trainer.checkpoint_state()
                step = int(state["trainer/step"][0])
                self._attempted[name] = step
                try:
                    path = await anyio.to_thread.run_sync(
                        self._write, trainer, state, snapshot, final, limiter=self._limiter
                    )
                except CheckpointSaveError:
                    raise
                except Exception as exc:  # the status file or pruning, after the commit
                    raise CheckpointSaveError(
                        f"Behavior '{name}': the checkpoint at step {step} could not be completed: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                self.saves.append((name, step, time.perf_counter() - start))
                return path

    async def final_save(self) -> list[Path]:
        """Checkpoint every trainer and write ``<run>/<behavior>.onnx`` (and ``.npz``).

        Every trainer is tried, one failing or not.
        :raises CheckpointSaveError: when a final save failed (all of them in a group when several did).
        """
        paths: list[Path] = []
        errors: list[CheckpointSaveError] = []
        for trainer in self.trainers.values():
            try:
                paths.append(await self.save(trainer, final=True))
            except CheckpointSaveError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("final saves failed", errors)
        return paths

    # ----- thread side --------------------------------------------------------------------------

    def _write(
        self, trainer: RLTrainer[Any], state: dict[str, np.ndarray], snapshot: PolicySnapshot, final: bool
    ) -> Path:
        name = trainer.behavior_name
        step = int(state["trainer/step"][0])
        bdir = self.behavior_dir(name)
        path = write_checkpoint(
            bdir / "checkpoints",
            name,
            step,
            {STATE_FILE: lambda p: save_arrays(p, state), "snapshot.npz": snapshot.save},
            {"version": snapshot.version, "trainer_type": str(getattr(trainer.trainer_settings, "trainer_type", ""))},
            fail_before_commit=self.fail_before_commit,
        )
        onnx_path = self._export(snapshot, bdir / f"{name}-{step}.onnx")
        kept = self._prune(trainer)
        rewards = list(trainer.reward_buffer)
        entry = {
            "steps": step,
            "file_path": str(onnx_path) if onnx_path else str(path),
            "reward": float(np.mean(rewards)) if rewards else None,
            "creation_time": time.time(),
            "auxillary_file_paths": [str(path)],
        }
        behavior_status = self._status.setdefault(name, {"checkpoints": []})
        # Exactly the checkpoints on disk, oldest first: entries of pruned ones go, and one that
        # an earlier, interrupted run committed without getting to record it is added back.
        known = {c["auxillary_file_paths"][0]: c for c in behavior_status["checkpoints"]}
        known[str(path)] = entry
        behavior_status["checkpoints"] = [known.get(str(c.path)) or self._status_entry(c, bdir) for c in kept]
        elos = state.get("selfplay/elos")
        if elos is not None:  # the learning policy's rating, as ML-Agents records it
            behavior_status["elo"] = float(elos[-1])
        if final:
            final_npz = self.run_dir / f"{name}.npz"
            atomic_write_bytes(final_npz, (path / "snapshot.npz").read_bytes())
            final_entry = dict(entry, auxillary_file_paths=[str(path), str(final_npz)])
            if onnx_path is not None:
                final_onnx = self.run_dir / f"{name}.onnx"
                atomic_write_bytes(final_onnx, onnx_path.read_bytes())
                final_entry["file_path"] = str(final_onnx)
            behavior_status["final_checkpoint"] = final_entry
        atomic_write_bytes(
            self.run_dir / "run_logs" / "training_status.json", json.dumps(self._status, indent=2).encode()
        )
        return path

    def _export(self, snapshot: PolicySnapshot, path: Path) -> Path | None:
        if not self.export_onnx:
            return None
        try:
            from asynctrainer.export.onnx import export_onnx
        except ImportError:
            return None
        try:
            return export_onnx(snapshot, path)
        except ExportError as exc:
            if isinstance(exc.__cause__, ImportError):  # the export extra is missing: say so once
                logger.warning("ONNX export skipped: %s", exc)
                self.export_onnx = False
            else:
                logger.warning("ONNX export failed: %s", exc)
            return None

    @staticmethod
    def _status_entry(info: CheckpointInfo, bdir: Path) -> dict[str, Any]:
        onnx = bdir / f"{info.behavior}-{info.step}.onnx"
        return {
            "steps": info.step,
            "file_path": str(onnx) if onnx.is_file() else str(info.path),
            "reward": None,
            "creation_time": float(info.manifest.get("created", 0.0)),
            "auxillary_file_paths": [str(info.path)],
        }

    def _prune(self, trainer: RLTrainer[Any]) -> list[CheckpointInfo]:
        """Delete all but the newest ``keep_checkpoints`` checkpoints and their ``.onnx``; return the kept."""
        keep = int(getattr(trainer.trainer_settings, "keep_checkpoints", 5))
        name = trainer.behavior_name
        bdir = self.behavior_dir(name)
        found = list_checkpoints(bdir / "checkpoints", name)
        if keep <= 0:
            return found
        cut = max(0, len(found) - keep)
        for old in found[:cut]:
            (bdir / f"{name}-{old.step}.onnx").unlink(missing_ok=True)
            remove_checkpoint(old.path)
        kept = found[cut:]
        # An .onnx whose checkpoint is gone (a crash between the two deletions) goes too.
        steps = {c.step for c in kept}
        pattern = re.compile(rf"^{re.escape(name)}-(\d+)\.onnx$")
        for f in bdir.iterdir():
            m = pattern.match(f.name)
            if m is not None and int(m[1]) not in steps:
                f.unlink(missing_ok=True)
        return kept
