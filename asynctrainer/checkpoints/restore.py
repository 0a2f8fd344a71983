"""Restoring trainers at start: ``--resume``, ``--initialize-from`` and ``init_path``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from asynctrainer.checkpoints.format import MANIFEST, read_manifest
from asynctrainer.checkpoints.manager import STATE_FILE, find_checkpoint, load_checkpoint_state
from asynctrainer.errors import CheckpointLoadError
from asynctrainer.runtime.contracts import RestoreRequest
from asynctrainer.runtime.trainer import RLTrainer

__all__ = ["checkpoint_to_restore", "restore_trainer"]

logger = logging.getLogger("asynctrainer")


def checkpoint_to_restore(behavior: str, request: RestoreRequest) -> tuple[Path, bool, bool] | None:
    """The checkpoint ``request`` asks for, whether it gives weights only and whether it was
    verified already; None for a fresh start.

    ``resume`` (or ``--inference``) takes everything from the run's own newest checkpoint;
    ``initialize_from`` takes weights from another run's newest one; ``init_path`` names a
    checkpoint directory or a behavior directory holding checkpoints (weights only).

    :raises CheckpointLoadError: when the checkpoint asked for is missing or corrupt.
    """
    if request.resume and request.run_dir is not None:
        return find_checkpoint(request.run_dir / behavior, behavior), False, True
    if request.initialize_from is not None:
        return find_checkpoint(request.initialize_from / behavior, behavior), True, True
    if request.init_path is not None:
        init = request.init_path
        if (init / MANIFEST).is_file():
            return init, True, False
        return find_checkpoint(init, behavior), True, True
    return None


def _load(behavior: str, request: RestoreRequest) -> tuple[Path, bool, dict[str, np.ndarray]] | None:
    found = checkpoint_to_restore(behavior, request)
    if found is None:
        return None
    source, weights_only, verified = found
    state = load_checkpoint_state(source, verified=verified)
    if not weights_only:
        _check_step(source, state)
    return source, weights_only, state


def _check_step(source: Path, state: dict[str, np.ndarray]) -> None:
    """A resumed state is of the step its checkpoint was committed as (the manifest's ``step``)."""
    committed = read_manifest(source, verify=False).get("step")
    stored = state.get("trainer/step")
    if not isinstance(committed, int) or stored is None or stored.shape != (1,) or stored.dtype.kind not in "iu":
        return  # a malformed field is named by the trainer's own check
    if int(stored[0]) != committed:
        state_file = source / STATE_FILE
        raise CheckpointLoadError(
            f"Checkpoint file '{state_file}' does not fit: field 'trainer/step' is {int(stored[0])} but the "
            f"checkpoint is of step {committed} (its {MANIFEST}).",
            path=str(state_file),
        )


async def restore_trainer(trainer: RLTrainer[Any], request: RestoreRequest) -> Path | None:
    """Load ``trainer``'s state as ``request`` says; returns the checkpoint used.

    Finding, verifying (once) and reading the checkpoint run in a worker thread, off the loop.

    :raises CheckpointLoadError: naming the file, and the field that is wrong, when the state
        does not fit the trainer.
    """
    name = trainer.behavior_name
    loaded = await anyio.to_thread.run_sync(_load, name, request)
    if loaded is None:
        return None
    source, weights_only, state = loaded
    state_file = source / STATE_FILE
    try:
        await trainer.run_exclusive(lambda: trainer.set_state(state, weights_only=weights_only))
    except CheckpointLoadError as exc:
        raise CheckpointLoadError(f"Checkpoint file '{state_file}' does not fit: {exc}", path=str(state_file)) from None
    except Exception as exc:  # an algorithm's own restore tripping over a bad field
        raise CheckpointLoadError(
            f"Checkpoint file '{state_file}' does not fit behavior '{name}': {type(exc).__name__}: {_short(exc)}",
            path=str(state_file),
        ) from exc
    logger.info(
        "%s: %s from %s (step %d).", name, "Weights loaded" if weights_only else "Resumed", source, trainer.step
    )
    return source


def _short(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message, cut to ``limit`` characters (some print whole arrays)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if len(text) <= limit else text[:limit] + "..."
