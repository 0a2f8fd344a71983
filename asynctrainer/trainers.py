"""Maps ``trainer_type`` to a trainer class; imports TensorFlow only when a trainer is made."""

from __future__ import annotations

from typing import Any

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import SettingsError
from asynctrainer.runtime.runner import TrainerContext
from asynctrainer.runtime.trainer import RLTrainer

__all__ = ["create_trainer"]


def create_trainer(
    behavior_name: str, trainer_settings: Any, behavior_spec: BehaviorSpec, context: TrainerContext
) -> RLTrainer[Any]:
    """Build the trainer named by ``trainer_settings.trainer_type``."""
    kind = trainer_settings.trainer_type
    common: dict[str, Any] = {
        "seed": context.seed,
        "training": context.training,
        "artifact_path": None if context.artifact_path is None else str(context.artifact_path),
        "stats_reporter": context.stats_reporter,
    }
    if kind == "ppo":
        from asynctrainer.ppo.trainer import PPOTrainer

        return PPOTrainer(behavior_name, trainer_settings, **common)
    if kind == "sac":
        from asynctrainer.sac.trainer import SACTrainer

        return SACTrainer(behavior_name, trainer_settings, **common)
    raise SettingsError(
        f"behaviors.{behavior_name}.trainer_type: '{kind}' is not supported yet (supported: ppo, sac).",
        key_path=f"behaviors.{behavior_name}.trainer_type",
    )
