"""The composition root: the runtime's Runner wired with the trainers, checkpoints and executors.

``asynctrainer.Runner`` is :class:`Runner` here. The runtime (``asynctrainer.runtime``) knows
none of PPO, SAC, the checkpoint files or Ray: it receives them through the protocols of
``runtime/contracts.py``, and this module is the one place that chooses them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from asynctrainer.checkpoints import FileCheckpoints
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import SettingsError, UnsupportedFeatureError
from asynctrainer.runtime import runner as runtime_runner
from asynctrainer.runtime.contracts import CheckpointBackend, EnvExecutor, TrainerContext, TrainerFactory
from asynctrainer.runtime.encoders import check_resolution
from asynctrainer.runtime.local_executor import LocalExecutor
from asynctrainer.runtime.runner import EnvSource
from asynctrainer.runtime.trainer import RLTrainer
from asynctrainer.settings import RunSettings, TrainerSettings

__all__ = ["Runner", "check_observations", "create_trainer", "executor_for"]

#: ``trainer_type`` → the module and class of its trainer (imported when a trainer is made).
TRAINERS: dict[str, tuple[str, str]] = {
    "ppo": ("asynctrainer.ppo.trainer", "PPOTrainer"),
    "sac": ("asynctrainer.sac.trainer", "SACTrainer"),
    "poca": ("asynctrainer.poca.trainer", "POCATrainer"),
}


def create_trainer(
    behavior_name: str, trainer_settings: TrainerSettings, behavior_spec: BehaviorSpec, context: TrainerContext
) -> RLTrainer[Any]:
    """Build the trainer named by ``trainer_settings.trainer_type``; TensorFlow is imported here, not before."""
    kind = trainer_settings.trainer_type
    if kind not in TRAINERS:
        raise SettingsError(
            f"behaviors.{behavior_name}.trainer_type: '{kind}' is not supported yet "
            f"(supported: {', '.join(TRAINERS)}).",
            key_path=f"behaviors.{behavior_name}.trainer_type",
        )
    network = trainer_settings.network_settings
    check_observations(
        behavior_name, behavior_spec, network.vis_encode_type, goal_conditioning=network.goal_conditioning_type
    )
    module, cls = TRAINERS[kind]
    trainer_class = getattr(importlib.import_module(module), cls)
    trainer: RLTrainer[Any] = trainer_class(
        behavior_name,
        trainer_settings,
        seed=context.seed,
        training=context.training,
        artifact_path=None if context.artifact_path is None else str(context.artifact_path),
        stats_reporter=context.stats_reporter,
    )
    return trainer


def check_observations(
    behavior_name: str,
    behavior_spec: BehaviorSpec,
    vis_encode_type: str = "simple",
    *,
    goal_conditioning: str = "hyper",
) -> None:
    """Refuse a behavior whose observations the trainers cannot learn from: variable-length ones that are
    not ``(max_entities, entity_size)`` or are goals of a ``hyper``-conditioned network, and visual ones
    smaller than ``vis_encode_type`` accepts.

    Runs before TensorFlow loads, naming the observation.
    """
    for index, obs in enumerate(behavior_spec.observation_specs):
        if not obs.is_variable_length:
            continue
        name = f"'{obs.name}'" if obs.name else f"#{index}"
        shape = "x".join(str(d) for d in obs.shape)
        if len(obs.shape) != 2:
            raise UnsupportedFeatureError(
                f"Behavior '{behavior_name}': observation {name} is variable-length with shape {shape}; "
                "a variable-length observation (Unity's buffer sensor) is max_entities x entity_size.",
                key_path=f"behaviors.{behavior_name}",
            )
        if obs.observation_type == "goal_signal" and goal_conditioning == "hyper":
            raise UnsupportedFeatureError(
                f"Behavior '{behavior_name}': observation {name} is a variable-length goal signal, which a "
                "hypernetwork cannot be conditioned on (nor can ML-Agents'). Make the goal a vector or visual "
                "observation, or set network_settings.goal_conditioning_type: none to read it as an ordinary one.",
                key_path=f"behaviors.{behavior_name}.network_settings.goal_conditioning_type",
            )
    check_resolution(behavior_name, behavior_spec, vis_encode_type)


def executor_for(settings: RunSettings) -> EnvExecutor:
    """The env executor ``env_settings.executor`` names: ``local`` (default) or ``ray``."""
    if settings.env_settings.executor == "ray":
        from asynctrainer.scale.ray_executor import RayExecutor

        return RayExecutor()
    return LocalExecutor()


def _importer(names: list[str]) -> Any:
    def warm_up() -> None:
        for name in names:
            importlib.import_module(name)

    return warm_up


class Runner(runtime_runner.Runner):
    """Trains every behavior of one env on the caller's event loop (see :class:`asynctrainer.runtime.runner.Runner`).

    The defaults: trainers by ``trainer_type`` (:func:`create_trainer`), checkpoints and ONNX
    files under the run directory (:class:`~asynctrainer.checkpoints.FileCheckpoints`), and the
    executor ``env_settings.executor`` names. Each can be replaced by passing it.
    """

    def __init__(
        self,
        settings: RunSettings,
        env: EnvSource | Sequence[EnvSource],
        *,
        trainer_factory: TrainerFactory | None = None,
        checkpoint_backend: CheckpointBackend | None = None,
        executor: EnvExecutor | None = None,
        **options: Any,
    ) -> None:
        # What the run imports lazily, imported up front in a worker thread (the loop keeps running).
        modules = ["asynctrainer.checkpoints", "yaml", "asynctrainer.export.onnx"]
        if trainer_factory is None:
            modules += [module for module, _ in TRAINERS.values()]
        super().__init__(
            settings,
            env,
            trainer_factory=trainer_factory or create_trainer,
            checkpoint_backend=checkpoint_backend or FileCheckpoints(),
            executor=executor or executor_for(settings),
            warm_up=options.pop("warm_up", None) or _importer(modules),
            **options,
        )
