"""ML-Agents' YAML run config: pydantic models, YAML loading and error translation.

``load_run_settings(path)`` reads a config file, ``run_settings_from_dict(data)`` validates one
already parsed; both return a :class:`RunSettings` or raise
:class:`~asynctrainer.errors.SettingsError` naming the key path, the bad value and what is
allowed. This package never imports TensorFlow.
"""

from __future__ import annotations

from asynctrainer.settings.loading import load_run_settings, run_settings_from_dict
from asynctrainer.settings.models import (
    BehavioralCloningSettings,
    CheckpointSettings,
    EngineSettings,
    EnvSettings,
    MemorySettings,
    NetworkSettings,
    POCAHyperparameters,
    PPOHyperparameters,
    RewardSignalSettings,
    RunSettings,
    SACHyperparameters,
    SelfPlaySettings,
    TorchSettings,
    TrainerSettings,
    run_id_problem,
)
from asynctrainer.settings.naming import behavior_name_for, split_behavior_id

__all__ = [
    "BehavioralCloningSettings",
    "CheckpointSettings",
    "EngineSettings",
    "EnvSettings",
    "MemorySettings",
    "NetworkSettings",
    "POCAHyperparameters",
    "PPOHyperparameters",
    "RewardSignalSettings",
    "RunSettings",
    "SACHyperparameters",
    "SelfPlaySettings",
    "TorchSettings",
    "TrainerSettings",
    "behavior_name_for",
    "load_run_settings",
    "run_id_problem",
    "run_settings_from_dict",
    "split_behavior_id",
]
