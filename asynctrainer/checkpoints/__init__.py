"""Checkpoints: the on-disk format and its commit protocol, the background manager, restore at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asynctrainer.checkpoints.manager import CheckpointManager, find_checkpoint, load_checkpoint_state
from asynctrainer.checkpoints.restore import checkpoint_to_restore, restore_trainer
from asynctrainer.runtime.contracts import RestoreRequest
from asynctrainer.runtime.trainer import RLTrainer

__all__ = [
    "CheckpointManager",
    "FileCheckpoints",
    "checkpoint_to_restore",
    "find_checkpoint",
    "load_checkpoint_state",
    "restore_trainer",
]


class FileCheckpoints:
    """The Runner's checkpoint backend: checkpoints and ONNX files under the run directory.

    :param export_onnx: write ``<behavior>-<step>.onnx`` beside each checkpoint and ``<behavior>.onnx`` at the end.
    """

    def __init__(self, *, export_onnx: bool = True) -> None:
        self.export_onnx = export_onnx

    def open(self, run_dir: Path, *, resume: bool, switch_interval: float | None) -> CheckpointManager:
        return CheckpointManager(run_dir, export_onnx=self.export_onnx, resume=resume, switch_interval=switch_interval)

    async def restore(self, trainer: RLTrainer[Any], request: RestoreRequest) -> Path | None:
        return await restore_trainer(trainer, request)
