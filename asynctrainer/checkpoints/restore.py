"""Restoring trainers at start: ``--resume``, ``--initialize-from`` and ``init_path``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from asynctrainer.checkpoints.format import MANIFEST
from asynctrainer.checkpoints.manager import find_checkpoint, load_checkpoint_state
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
    return source, weights_only, load_checkpoint_state(source, verified=verified)


async def restore_trainer(trainer: RLTrainer[Any], request: RestoreRequest) -> Path | None:
    """Load ``trainer``'s state as ``request`` says; returns the checkpoint used.

    Finding, verifying (once) and reading the checkpoint run in a worker thread, off the loop.
    """
    name = trainer.behavior_name
    loaded = await anyio.to_thread.run_sync(_load, name, request)
    if loaded is None:
        return None
    source, weights_only, state = loaded
    await trainer.run_exclusive(lambda: trainer.set_state(state, weights_only=weights_only))
    logger.info(
        "%s: %s from %s (step %d).", name, "Weights loaded" if weights_only else "Resumed", source, trainer.step
    )
    return source
