"""asynctrainer: reinforcement-learning trainers on asyncio, with ML-Agents' trainer contract.

The public names below are imported lazily, so ``import asynctrainer`` stays light and
never imports TensorFlow; a name is loaded the first time it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asynctrainer.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ActionBatch": "asynctrainer.envs.spec",
    "ActionSpec": "asynctrainer.envs.spec",
    "AsyncEnv": "asynctrainer.envs.base",
    "AsyncTrainerError": "asynctrainer.errors",
    "BehaviorSpec": "asynctrainer.envs.spec",
    "CheckpointError": "asynctrainer.errors",
    "CheckpointLoadError": "asynctrainer.errors",
    "CheckpointSaveError": "asynctrainer.errors",
    "DecisionSteps": "asynctrainer.envs.spec",
    "Demonstration": "asynctrainer.demos.reader",
    "DemonstrationError": "asynctrainer.errors",
    "DemonstrationWriter": "asynctrainer.demos.writer",
    "EnvError": "asynctrainer.errors",
    "ExportError": "asynctrainer.errors",
    "GameSession": "asynctrainer.envs.game_session",
    "GymnasiumEnv": "asynctrainer.envs.gymnasium_env",
    "ObservationSpec": "asynctrainer.envs.spec",
    "PolicyServer": "asynctrainer.serving.server",
    "PolicySlot": "asynctrainer.runtime.policy_slot",
    "PolicySnapshot": "asynctrainer.runtime.snapshot",
    "RLTrainer": "asynctrainer.runtime.trainer",
    "RunResult": "asynctrainer.runtime.runner",
    "RunSettings": "asynctrainer.settings",
    "Runner": "asynctrainer.app",
    "SettingsError": "asynctrainer.errors",
    "SpecError": "asynctrainer.errors",
    "StatsReporter": "asynctrainer.runtime.stats",
    "StepBatch": "asynctrainer.envs.spec",
    "TerminalSteps": "asynctrainer.envs.spec",
    "Trainer": "asynctrainer.runtime.trainer",
    "TrainerSettings": "asynctrainer.settings",
    "Trajectory": "asynctrainer.runtime.trajectory",
    "UpdateError": "asynctrainer.errors",
    "UsageError": "asynctrainer.errors",
    "export_onnx": "asynctrainer.export.onnx",
    "export_saved_model": "asynctrainer.export.savedmodel",
    "load_demonstration": "asynctrainer.demos.reader",
    "load_policy": "asynctrainer.serving.server",
    "load_run_settings": "asynctrainer.settings",
    "open_trajectory_channel": "asynctrainer.runtime.channels",
    "preload": "asynctrainer.startup",
    "run_settings_from_dict": "asynctrainer.settings",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from asynctrainer.app import Runner
    from asynctrainer.demos.reader import Demonstration, load_demonstration
    from asynctrainer.demos.writer import DemonstrationWriter
    from asynctrainer.envs.base import AsyncEnv
    from asynctrainer.envs.game_session import GameSession
    from asynctrainer.envs.gymnasium_env import GymnasiumEnv
    from asynctrainer.envs.spec import (
        ActionBatch,
        ActionSpec,
        BehaviorSpec,
        DecisionSteps,
        ObservationSpec,
        StepBatch,
        TerminalSteps,
    )
    from asynctrainer.errors import (
        AsyncTrainerError,
        CheckpointError,
        CheckpointLoadError,
        CheckpointSaveError,
        DemonstrationError,
        EnvError,
        ExportError,
        SettingsError,
        SpecError,
        UpdateError,
        UsageError,
    )
    from asynctrainer.export.onnx import export_onnx
    from asynctrainer.export.savedmodel import export_saved_model
    from asynctrainer.runtime.channels import open_trajectory_channel
    from asynctrainer.runtime.policy_slot import PolicySlot
    from asynctrainer.runtime.runner import RunResult
    from asynctrainer.runtime.snapshot import PolicySnapshot
    from asynctrainer.runtime.stats import StatsReporter
    from asynctrainer.runtime.trainer import RLTrainer, Trainer
    from asynctrainer.runtime.trajectory import Trajectory
    from asynctrainer.serving.server import PolicyServer, load_policy
    from asynctrainer.settings import RunSettings, TrainerSettings, load_run_settings, run_settings_from_dict
    from asynctrainer.startup import preload
