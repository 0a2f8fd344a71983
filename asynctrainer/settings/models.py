"""ML-Agents' YAML run config as pydantic models, with ML-Agents' names and defaults.

Every key ML-Agents accepts is accepted. A feature asynctrainer does not build yet is refused
with :class:`~asynctrainer.errors.UnsupportedFeatureError`; any other bad key or value raises
:class:`~asynctrainer.errors.SettingsError` with one short paragraph naming the key path, the
bad value and what is allowed. This module never imports TensorFlow.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticUseDefault

from asynctrainer.errors import SettingsError
from asynctrainer.settings.naming import behavior_name_for
from asynctrainer.settings.notices import collecting, notice
from asynctrainer.settings.translate import invalid, settings_error, show, unknown_key, unsupported
from asynctrainer.settings.upgrade import upgrade_run, upgrade_trainer

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
    "run_id_problem",
]

Schedule = Literal["constant", "linear"]
VisEncodeType = Literal["simple", "nature_cnn", "resnet", "match3", "fully_connected"]


def _coerce_int(value: Any) -> Any:
    """Accepts ``5.0e5``, ``"1e6"`` and ``500000.0`` for integer counts, as ML-Agents does."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if math.isfinite(number) and number.is_integer() else value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


#: An int that also accepts integral floats and float strings ("5.0e5").
Count = Annotated[int, BeforeValidator(_coerce_int)]


class _Settings(BaseModel):
    """Base of every settings model: unknown keys and bad values raise SettingsError."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            with collecting():
                super().__init__(**data)
        except ValidationError as exc:
            raise settings_error(exc) from None

    # As pydantic's RootModel does: nested validation must not call this __init__, so that a
    # nested model's errors keep their full key path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validates ``obj``; raises SettingsError (never a pydantic ValidationError)."""
        try:
            with collecting():
                return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise settings_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if key not in cls.model_fields:
                    raise unknown_key(key, cls.model_fields)
        return data


class MemorySettings(_Settings):
    """Recurrent memory of a network (``network_settings.memory``): an LSTM after the dense layers."""

    sequence_length: Count = Field(
        default=64, gt=0, description="Length of the sequences a recurrent network trains on."
    )
    memory_size: Count = Field(default=128, gt=0, description="Size of the recurrent state; must be even.")

    @field_validator("memory_size")
    @classmethod
    def _even_memory(cls, value: int) -> int:
        if value % 2:
            raise invalid(f"{value} is not valid: memory_size must be even.")
        return value


class NetworkSettings(_Settings):
    """Network shape (``network_settings``)."""

    normalize: bool = Field(default=False, description="Normalise vector observations (running stats).")
    hidden_units: Count = Field(default=128, gt=0, description="Units in each hidden dense layer.")
    num_layers: Count = Field(default=2, gt=0, description="Number of hidden dense layers.")
    vis_encode_type: VisEncodeType = Field(default="simple", description="Encoder of visual observations.")
    memory: MemorySettings | None = Field(default=None, description="Recurrent memory (an LSTM after the body).")
    goal_conditioning_type: Literal["hyper", "none"] = Field(
        default="hyper",
        description="How goal observations condition the network: hyper (a hypernetwork layer) or none.",
    )
    deterministic: bool = Field(default=False, description="Act with the distribution's mode.")


class _OnPolicyHyperparameters(_Settings):
    """The hyperparameters PPO and POCA share."""

    batch_size: Count = Field(default=1024, gt=0, description="Experiences per minibatch.")
    buffer_size: Count = Field(default=10240, gt=0, description="Experiences per policy update.")
    learning_rate: float = Field(default=3e-4, gt=0, description="Initial learning rate of the optimizer.")
    beta: float = Field(default=5e-3, ge=0, description="Strength of the entropy regularisation.")
    epsilon: float = Field(default=0.2, gt=0, description="Clipping range of the PPO policy ratio.")
    lambd: float = Field(default=0.95, ge=0, le=1, description="GAE lambda.")
    num_epoch: Count = Field(default=3, gt=0, description="Passes through the buffer per update.")
    learning_rate_schedule: Schedule = Field(
        default="linear", description="How the learning rate changes over max_steps."
    )
    beta_schedule: Schedule | None = Field(default=None, description="Schedule of beta (null: learning_rate's).")
    epsilon_schedule: Schedule | None = Field(default=None, description="Schedule of epsilon (null: learning_rate's).")

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        if self.batch_size > self.buffer_size:
            raise invalid(
                f"batch_size ({self.batch_size}) must not exceed buffer_size ({self.buffer_size}).", where="batch_size"
            )
        if self.beta_schedule is None:
            self.beta_schedule = self.learning_rate_schedule
        if self.epsilon_schedule is None:
            self.epsilon_schedule = self.learning_rate_schedule
        return self


class PPOHyperparameters(_OnPolicyHyperparameters):
    """``hyperparameters`` of a ``trainer_type: ppo`` behavior."""

    shared_critic: bool = Field(default=False, description="Share the value network with the policy.")


class POCAHyperparameters(_OnPolicyHyperparameters):
    """``hyperparameters`` of a ``trainer_type: poca`` behavior: PPO's, but its critic is the group's
    (centralised, so never shared with the policy)."""


class SACHyperparameters(_Settings):
    """``hyperparameters`` of a ``trainer_type: sac`` behavior."""

    batch_size: Count = Field(default=128, gt=0, description="Experiences per minibatch.")
    buffer_size: Count = Field(default=50000, gt=0, description="Capacity of the replay buffer.")
    learning_rate: float = Field(default=3e-4, gt=0, description="Initial learning rate of the optimizers.")
    learning_rate_schedule: Schedule = Field(
        default="constant", description="How the learning rate changes over max_steps."
    )
    buffer_init_steps: Count = Field(default=0, ge=0, description="Random-action steps before the first update.")
    tau: float = Field(default=0.005, gt=0, le=1, description="Target networks' soft-update rate.")
    steps_per_update: float = Field(default=1.0, gt=0, description="Agent steps per gradient update (on average).")
    save_replay_buffer: bool = Field(default=False, description="Save the replay buffer with checkpoints.")
    init_entcoef: float = Field(default=1.0, gt=0, description="Initial entropy coefficient.")
    reward_signal_steps_per_update: float | None = Field(default=None, gt=0, description="Null means steps_per_update.")

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        if self.reward_signal_steps_per_update is None:
            self.reward_signal_steps_per_update = self.steps_per_update
        elif self.reward_signal_steps_per_update != self.steps_per_update:
            notice(
                "hyperparameters.reward_signal_steps_per_update",
                f"hyperparameters.reward_signal_steps_per_update ({self.reward_signal_steps_per_update}) is accepted "
                f"but has no effect yet: learned reward signals update once per gradient step (steps_per_update, "
                f"{self.steps_per_update}).",
            )
        return self


class RewardSignalSettings(_Settings):
    """One entry of ``reward_signals``; the keys of gail/curiosity/rnd parse before being refused."""

    gamma: float = Field(default=0.99, ge=0, le=1, description="Discount factor of this reward.")
    strength: float = Field(default=1.0, ge=0, description="Factor the reward is multiplied by.")
    network_settings: NetworkSettings | None = Field(default=None, description="Network of a learned reward signal.")
    learning_rate: float | None = Field(default=None, gt=0, description="Learning rate of a learned signal.")
    encoding_size: Count | None = Field(default=None, gt=0, description="Deprecated: use hidden_units.")
    demo_path: str | None = Field(default=None, description="Demonstration file of gail.")
    use_actions: bool | None = Field(default=None, description="gail: discriminate on actions too.")
    use_vail: bool | None = Field(default=None, description="gail: use a variational bottleneck.")

    @field_validator("encoding_size")
    @classmethod
    def _warn_encoding_size(cls, value: int | None) -> int | None:
        if value is not None:
            notice(
                "reward_signals.encoding_size",
                "reward_signals.<signal>.encoding_size is deprecated (as in ML-Agents): use the signal's "
                "network_settings.hidden_units instead.",
            )
        return value

    @model_serializer(mode="wrap")
    def _drop_unset_signal_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in _LEARNED_SIGNAL_KEYS}


_LEARNED_SIGNAL_KEYS = frozenset({"learning_rate", "encoding_size", "demo_path", "use_actions", "use_vail"})
_BASE_SIGNAL_KEYS = frozenset({"gamma", "strength", "network_settings"})
_SIGNAL_KEYS: dict[str, frozenset[str]] = {
    "extrinsic": _BASE_SIGNAL_KEYS,
    "gail": _BASE_SIGNAL_KEYS | _LEARNED_SIGNAL_KEYS,
    "curiosity": _BASE_SIGNAL_KEYS | {"learning_rate", "encoding_size"},
    "rnd": _BASE_SIGNAL_KEYS | {"learning_rate", "encoding_size"},
}


class BehavioralCloningSettings(_Settings):
    """``behavioral_cloning``: supervised learning of the actor on a demonstration, beside the RL update."""

    demo_path: str = Field(description="A .demo file, or a directory of them.")
    steps: Count = Field(default=0, ge=0, description="Policy steps over which strength decays to 0 (0: constant).")
    strength: float = Field(default=1.0, ge=0, description="Scales the learning rate of the cloning updates.")
    samples_per_update: Count = Field(default=0, ge=0, description="Demonstration rows per update (0: all).")
    num_epoch: Count | None = Field(default=None, gt=0, description="Passes over the rows per update (null: 3).")
    batch_size: Count | None = Field(default=None, gt=0, description="Rows per gradient step (null: the trainer's).")


class SelfPlaySettings(_Settings):
    """``self_play``: teams of a game learn against frozen snapshots of each other, one team at a time."""

    save_steps: Count = Field(default=20000, gt=0, description="Trainer steps between two snapshots kept.")
    team_change: Count | None = Field(
        default=None, gt=0, description="Trainer steps before the next team learns (null: 5 × save_steps)."
    )
    swap_steps: Count = Field(default=2000, gt=0, description="Opponent steps between two opponent swaps.")
    window: Count = Field(default=10, gt=0, description="Snapshots kept to draw opponents from.")
    play_against_latest_model_ratio: float = Field(
        default=0.5, description="Probability that an opponent plays the newest policy rather than a kept one."
    )
    initial_elo: float = Field(default=1200.0, description="ELO rating every policy starts with.")

    @field_validator("play_against_latest_model_ratio")
    @classmethod
    def _warn_ratio(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            notice(
                "self_play.play_against_latest_model_ratio",
                f"self_play.play_against_latest_model_ratio is {value}, outside [0, 1]: it is read as a "
                "probability, so opponents always (above 1) or never (below 0) play the newest policy.",
            )
        return value

    @model_validator(mode="after")
    def _default_team_change(self) -> Self:
        if self.team_change is None:
            self.team_change = 5 * self.save_steps
        return self


Hyperparameters = PPOHyperparameters | SACHyperparameters | POCAHyperparameters
#: ``trainer_type`` → the model of its ``hyperparameters``.
HYPERPARAMETERS: dict[str, type[PPOHyperparameters | SACHyperparameters | POCAHyperparameters]] = {
    "ppo": PPOHyperparameters,
    "sac": SACHyperparameters,
    "poca": POCAHyperparameters,
}


def _default_hyperparameters() -> Hyperparameters:
    return PPOHyperparameters()


def _default_reward_signals() -> dict[str, RewardSignalSettings]:
    return {"extrinsic": RewardSignalSettings()}


class TrainerSettings(_Settings):
    """Settings of one behavior (an entry of ``behaviors``, or ``default_settings``)."""

    trainer_type: Literal["ppo", "sac", "poca"] = Field(default="ppo", description="Algorithm: ppo, sac or poca.")
    hyperparameters: Hyperparameters = Field(
        default_factory=_default_hyperparameters, description="Keys depend on trainer_type."
    )
    checkpoint_interval: Count = Field(default=500000, gt=0, description="Trainer steps between two checkpoints.")
    network_settings: NetworkSettings = Field(default_factory=NetworkSettings, description="Shape of the networks.")
    reward_signals: dict[str, RewardSignalSettings] = Field(
        default_factory=_default_reward_signals, description="Reward signals by name."
    )
    init_path: str | None = Field(default=None, description="Checkpoint to initialise the weights from.")
    keep_checkpoints: Count = Field(default=5, ge=1, description="Checkpoints kept on disk.")
    even_checkpoints: bool = Field(default=False, description="Spread the checkpoints over max_steps.")
    max_steps: Count = Field(default=500000, ge=0, description="Trainer steps after which training ends.")
    time_horizon: Count = Field(default=64, gt=0, description="Agent steps per trajectory cut.")
    summary_freq: Count = Field(default=50000, gt=0, description="Trainer steps between two summaries.")
    self_play: SelfPlaySettings | None = Field(default=None, description="Self-play between the teams of a game.")
    behavioral_cloning: BehavioralCloningSettings | None = Field(
        default=None, description="Behavioral cloning from a demonstration."
    )
    strict_on_policy: bool = Field(
        default=False,
        description="The env loop of this behavior waits for the new policy once a buffer is "
        "full, as ML-Agents' non-threaded trainers do.",
    )

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = upgrade_trainer(data)
        hyperparameters = data.get("hyperparameters")
        if "trainer_type" not in data:
            kinds = [kind for kind, model in HYPERPARAMETERS.items() if isinstance(hyperparameters, model)]
            if kinds:
                data["trainer_type"] = kinds[0]
            elif "hyperparameters" in data:
                raise invalid(
                    "hyperparameters were specified but no trainer_type was given; add trainer_type: ppo, sac or poca.",
                    where="hyperparameters",
                )
        if hyperparameters is None:
            data["hyperparameters"] = {}
        return data

    @field_validator("trainer_type", mode="before")
    @classmethod
    def _check_trainer_type(cls, value: Any) -> Any:
        if value not in HYPERPARAMETERS:
            raise invalid(f"{show(value)} is not valid: expected one of {', '.join(HYPERPARAMETERS)}.")
        return value

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _hyperparameters_for_type(cls, value: Any, info: ValidationInfo) -> Any:
        trainer_type = info.data.get("trainer_type")
        if trainer_type is None:  # trainer_type itself was invalid and is reported
            raise PydanticUseDefault()
        model = HYPERPARAMETERS[trainer_type]
        if isinstance(value, tuple(HYPERPARAMETERS.values())):
            if not isinstance(value, model):
                raise invalid(f"{type(value).__name__} given for trainer_type {trainer_type}.")
            return value
        return model.__pydantic_validator__.validate_python({} if value is None else value)

    @field_validator("reward_signals", mode="before")
    @classmethod
    def _check_reward_signal_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        for name, signal in value.items():
            allowed = _SIGNAL_KEYS.get(name) if isinstance(name, str) else None
            if allowed is None:
                raise invalid(
                    f"{show(name)} is not a reward signal: expected one of extrinsic, gail, curiosity, rnd.",
                    where=str(name),
                )
            if isinstance(signal, Mapping):
                for key in signal:
                    if key not in allowed:
                        raise unknown_key(key, allowed, where=name)
        return value

    @field_validator("reward_signals")
    @classmethod
    def _check_reward_signals(cls, value: dict[str, RewardSignalSettings]) -> dict[str, RewardSignalSettings]:
        for name, signal in value.items():
            if name == "gail" and not signal.demo_path:
                raise invalid(
                    "the gail reward signal needs demo_path: a .demo file or a directory of them "
                    "(e.g. reward_signals: {gail: {demo_path: Demos/Expert.demo}}).",
                    where=name,
                )
        if not value:
            raise invalid(
                f"{show(value)} is not valid: reward_signals needs at least one signal, "
                "e.g. reward_signals: {extrinsic: {gamma: 0.99}}; leave reward_signals out for that default."
            )
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        memory = self.network_settings.memory
        if memory is not None and memory.sequence_length > self.hyperparameters.batch_size:
            raise invalid(
                f"sequence_length {memory.sequence_length} is greater than batch_size "
                f"{self.hyperparameters.batch_size}: with memory, sequence_length must be at most batch_size.",
                where="network_settings.memory.sequence_length",
            )
        if self.trainer_type == "poca":
            if memory is not None:
                raise unsupported(
                    "network_settings.memory with trainer_type poca is not supported yet (recurrent POCA); "
                    "use ppo for a recurrent policy, or poca without memory.",
                    where="network_settings.memory",
                )
            for name in self.reward_signals:
                if name != "extrinsic":
                    notice(
                        f"reward_signals.{name}",
                        f"Reward signal {name} is not supported with the POCA trainer; results may be unexpected "
                        "(as in ML-Agents: it is computed from each agent's own observations).",
                    )
        if self.even_checkpoints:
            self.checkpoint_interval = max(1, int(self.max_steps / self.keep_checkpoints))
        return self


class EnvSettings(_Settings):
    """``env_settings``: where the envs come from and how many run."""

    env_path: str | None = Field(default=None, description="Env to train in (the --env value).")
    env_args: list[str] | None = Field(default=None, description="Extra arguments for the env.")
    base_port: Count = Field(default=5005, ge=0, le=65535, description="First port of Unity workers.")
    num_envs: Count = Field(default=1, ge=1, description="Number of env copies stepped in parallel.")
    num_areas: Count = Field(default=1, ge=1, description="Training areas per Unity env instance.")
    seed: Count = Field(default=-1, description="Random seed; -1 picks one at random.")
    timeout_wait: Count = Field(default=60, gt=0, description="Seconds to wait for an env to answer.")
    max_lifetime_restarts: Count = Field(default=10, ge=-1, description="Env restarts allowed (-1: unlimited).")
    restarts_rate_limit_n: Count = Field(default=1, ge=-1, description="Restarts per period (-1: unlimited).")
    restarts_rate_limit_period_s: Count = Field(default=60, gt=0, description="Restart rate-limit period (s).")
    executor: Literal["local", "ray"] = Field(default="local", description="Where env loops run.")
    num_workers: Count = Field(default=1, ge=1, description="Ray env actors (executor: ray).")
    envs_per_worker: Count = Field(default=1, ge=1, description="Env copies per Ray actor.")
    ray_address: str | None = Field(default=None, description="Address of the Ray cluster; null: local.")

    @field_validator("env_args", mode="before")
    @classmethod
    def _split_env_args(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value


class EngineSettings(_Settings):
    """``engine_settings``: Unity engine options, kept for compatibility."""

    width: Count = Field(default=84, gt=0, description="Width of the Unity window in pixels.")
    height: Count = Field(default=84, gt=0, description="Height of the Unity window in pixels.")
    quality_level: Count = Field(default=5, ge=0, description="Unity quality level.")
    time_scale: float = Field(default=20.0, gt=0, description="Unity time scale.")
    target_frame_rate: Count = Field(default=-1, description="Unity target frame rate (-1: unlimited).")
    capture_frame_rate: Count = Field(default=60, description="Unity capture frame rate.")
    no_graphics: bool = Field(default=False, description="Run Unity without graphics.")
    no_graphics_monitor: bool = Field(
        default=False, description="Run Unity without graphics but the first env (ML-Agents 1.0 and later)."
    )


def run_id_problem(run_id: str) -> str | None:
    """What is wrong with ``run_id`` as a run's name, or None when it is a plain name.

    The run id names ``results_dir/<run_id>``, which ``--force`` deletes: it must stay inside
    ``results_dir``. One rule for the YAML key, the ``--run-id`` flag and ``Runner(run_id=...)``.
    """
    if run_id in ("", ".", "..") or any(c in run_id for c in ("/", "\\", "\0")):
        return (
            f"{show(run_id)} is not valid: a run id must be a plain name, the name of the run's directory "
            "in results_dir (no '/' or '\\', not '.', '..' or empty, no NUL character)."
        )
    return None


class CheckpointSettings(_Settings):
    """``checkpoint_settings``: the run id, where results go and how a run starts."""

    run_id: str = Field(default="ppo", description="Name of the run: results go to results_dir/run_id.")
    initialize_from: str | None = Field(default=None, description="Run id whose weights initialise this run (step 0).")
    load_model: bool = Field(default=False, description="Deprecated ML-Agents alias of resume.")
    resume: bool = Field(default=False, description="Resume the run from its last checkpoint.")
    force: bool = Field(default=False, description="Overwrite an existing run directory.")
    train_model: bool = Field(default=False, description="Deprecated ML-Agents flag (--train).")
    inference: bool = Field(default=False, description="Run the policy without training.")
    results_dir: str = Field(default="results", description="Directory holding all runs.")

    @field_validator("run_id")
    @classmethod
    def _plain_run_id(cls, value: str) -> str:
        problem = run_id_problem(value)
        if problem is not None:
            raise invalid(problem)
        return value

    @property
    def write_path(self) -> str:
        """Directory of this run: ``results_dir/run_id``."""
        return os.path.join(self.results_dir, self.run_id)

    @property
    def maybe_init_path(self) -> str | None:
        """Directory of the run to initialise from, or None."""
        if self.initialize_from is None:
            return None
        return os.path.join(self.results_dir, self.initialize_from)

    @property
    def run_logs_dir(self) -> str:
        """Directory of timers.json and training_status.json."""
        return os.path.join(self.write_path, "run_logs")


class TorchSettings(_Settings):
    """``torch_settings``, kept for compatibility with ML-Agents configs."""

    device: str | None = Field(default=None, description="Device to train on (cpu, cuda, cuda:0).")


_SAMPLER_TYPES = ("uniform", "gaussian", "multirangeuniform", "constant")
#: Each sampler's arguments (besides an optional seed), as ML-Agents names them.
_SAMPLER_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "uniform": ("min_value", "max_value"),
    "gaussian": ("mean", "st_dev"),
    "multirangeuniform": ("intervals",),
    "constant": ("value",),
}
_SECTIONS = ("behaviors", "env_settings", "engine_settings", "checkpoint_settings", "torch_settings")
#: A curriculum lesson's completion criteria and their defaults (ML-Agents' ``CompletionCriteriaSettings``).
_CRITERIA_DEFAULTS: dict[str, Any] = {
    "measure": "reward",
    "min_lesson_length": 0,
    "signal_smoothing": True,
    "threshold": 0.0,
    "require_reset": False,
}


def _check_parameter_value(where: str, parameter: Any) -> None:
    """A constant (a number) or a sampler (``sampler_type`` and ``sampler_parameters``)."""
    if not isinstance(parameter, Mapping):
        if isinstance(parameter, bool) or not isinstance(parameter, (int, float)):
            raise invalid(
                f"{show(parameter)} is not valid: expected a number, a sampler (sampler_type and "
                "sampler_parameters) or a curriculum.",
                where=where,
            )
        return
    for key in parameter:
        if key not in ("sampler_type", "sampler_parameters"):
            raise unknown_key(key, ("sampler_type", "sampler_parameters", "curriculum"), where)
    sampler = parameter.get("sampler_type")
    if sampler not in _SAMPLER_TYPES:
        raise invalid(
            f"{show(sampler)} is not valid: expected one of {', '.join(_SAMPLER_TYPES)}.",
            where=f"{where}.sampler_type",
        )
    if not isinstance(parameter.get("sampler_parameters"), Mapping):
        raise invalid(
            f"{show(parameter.get('sampler_parameters'))} is not valid: expected a mapping of sampler parameters.",
            where=f"{where}.sampler_parameters",
        )
    arguments = parameter["sampler_parameters"]
    needed = _SAMPLER_ARGUMENTS[sampler]
    for key in arguments:
        if key not in (*needed, "seed"):
            raise unknown_key(key, (*needed, "seed"), f"{where}.sampler_parameters")
    missing = [key for key in needed if key not in arguments]
    if missing:
        raise invalid(
            f"{', '.join(missing)} missing: a {sampler} sampler takes {', '.join(needed)} (and optionally seed).",
            where=f"{where}.sampler_parameters",
        )


def _check_curriculum(name: str, lessons: Any) -> list[dict[str, Any]]:
    """A list of lessons ``{name, value, completion_criteria}``; criteria on every lesson but the last.

    :returns: the lessons in that form (ML-Agents 0.18's ``- LessonName: {value, ...}`` is rewritten).
    """
    where = f"{name}.curriculum"
    if not isinstance(lessons, list) or not lessons:
        raise invalid(f"{show(lessons)} is not valid: a curriculum is a non-empty list of lessons.", where=where)
    out: list[dict[str, Any]] = []
    for index, lesson in enumerate(lessons):
        at = f"{where}.{index}"
        if not isinstance(lesson, Mapping):
            raise invalid(f"{show(lesson)} is not valid: a lesson is a mapping (name, value, completion_criteria).", at)
        if len(lesson) == 1:
            ((key, body),) = lesson.items()
            if key not in ("name", "value", "completion_criteria") and isinstance(body, Mapping):
                lesson = {"name": str(key), **body}  # the 0.18 form, keyed by the lesson's name
        out.append(dict(lesson))
        for key in lesson:
            if key not in ("name", "value", "completion_criteria"):
                raise unknown_key(key, ("name", "value", "completion_criteria"), at)
        if "value" not in lesson:
            raise invalid("value missing: every lesson has a value (a number or a sampler).", at)
        _check_parameter_value(f"{at}.value", lesson["value"])
        criteria = lesson.get("completion_criteria")
        last = index == len(lessons) - 1
        if criteria is None:
            if not last:
                raise invalid("completion_criteria missing: every lesson but the last says when it is complete.", at)
            continue
        if last:
            notice(
                f"environment_parameters.{where}.completion_criteria",
                f"environment_parameters.{at}.completion_criteria is ignored: the last lesson of a curriculum "
                "never completes (as in ML-Agents).",
            )
        _check_criteria(f"{at}.completion_criteria", criteria)
    return out


def _check_criteria(where: str, criteria: Any) -> None:
    if not isinstance(criteria, Mapping):
        raise invalid(f"{show(criteria)} is not valid: completion_criteria is a mapping.", where)
    allowed = ("behavior", *_CRITERIA_DEFAULTS)
    for key in criteria:
        if key not in allowed:
            raise unknown_key(key, allowed, where)
    if not isinstance(criteria.get("behavior"), str) or not criteria["behavior"]:
        raise invalid(
            f"behavior {show(criteria.get('behavior'))} is not valid: the criteria name the behavior whose "
            "rewards or progress complete the lesson.",
            where,
        )
    measure = criteria.get("measure", "reward")
    if measure not in ("reward", "progress"):
        raise invalid(f"{show(measure)} is not valid: expected reward or progress.", f"{where}.measure")
    threshold = criteria.get("threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise invalid(f"{show(threshold)} is not valid: the threshold is a number.", f"{where}.threshold")
    if measure == "progress" and not 0.0 <= threshold <= 1.0:
        raise invalid(
            f"{show(threshold)} is not valid: a progress threshold is a fraction of max_steps, in [0, 1].",
            f"{where}.threshold",
        )
    length = criteria.get("min_lesson_length", 0)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise invalid(
            f"{show(length)} is not valid: min_lesson_length is a count of episodes, >= 0.",
            f"{where}.min_lesson_length",
        )
    for key in ("signal_smoothing", "require_reset"):
        if key in criteria and not isinstance(criteria[key], bool):
            raise invalid(f"{show(criteria[key])} is not valid: {key} is true or false.", f"{where}.{key}")


def _deep_update(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    """ML-Agents' deep_update_dict: nested mappings are merged, other values replaced."""
    for key, value in update.items():
        if isinstance(target.get(key), dict) and isinstance(value, Mapping):
            _deep_update(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _merge_trainer_dicts(default: Mapping[str, Any], own: Any) -> Any:
    """The behavior's own keys over default_settings' (hyperparameters only for one trainer).

    ``own`` that is neither a mapping nor null is returned as it is, for validation to refuse.
    """
    if own is not None and not isinstance(own, Mapping):
        return own
    own = own or {}
    merged: dict[str, Any] = {}
    _deep_update(merged, default)
    if own.get("trainer_type", merged.get("trainer_type", "ppo")) != merged.get("trainer_type", "ppo"):
        merged.pop("hyperparameters", None)
    _deep_update(merged, own)
    return merged


class RunSettings(_Settings):
    """The whole run config: one YAML file of ML-Agents' format."""

    default_settings: TrainerSettings | None = Field(default=None, description="Base of every behavior's settings.")
    behaviors: dict[str, TrainerSettings] = Field(
        default_factory=dict, description="Trainer settings by behavior name."
    )
    env_settings: EnvSettings = Field(default_factory=EnvSettings, description="Env options.")
    engine_settings: EngineSettings = Field(default_factory=EngineSettings, description="Unity engine options.")
    environment_parameters: dict[str, Any] | None = Field(default=None, description="Constants or samplers by name.")
    checkpoint_settings: CheckpointSettings = Field(
        default_factory=CheckpointSettings, description="Run id and results directory."
    )
    torch_settings: TorchSettings = Field(default_factory=TorchSettings, description="Torch options (compatibility).")
    debug: bool = Field(default=False, description="Verbose logging and tracebacks.")

    @model_validator(mode="before")
    @classmethod
    def _merge_default_settings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = {k: v for k, v in data.items() if not (v is None and k in _SECTIONS)}
        data = upgrade_run(data, cls.model_fields)
        default = data.get("default_settings")
        behaviors = data.get("behaviors")
        if isinstance(default, TrainerSettings):
            default = default.model_dump()
        if isinstance(default, Mapping) and isinstance(behaviors, Mapping):
            data["behaviors"] = {
                name: own if isinstance(own, TrainerSettings) else _merge_trainer_dicts(default, own)
                for name, own in behaviors.items()
            }
        return data

    @field_validator("environment_parameters")
    @classmethod
    def _check_environment_parameters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for name, parameter in (value or {}).items():
            if isinstance(parameter, Mapping) and "curriculum" in parameter:
                extra = [k for k in parameter if k != "curriculum"]
                if extra:
                    raise unknown_key(extra[0], ("curriculum",), name)
                assert value is not None
                value[name] = {"curriculum": _check_curriculum(name, parameter["curriculum"])}
            else:
                _check_parameter_value(name, parameter)
        return value

    def trainer_settings_for(self, behavior_name: str) -> TrainerSettings:
        """The behavior's entry, else a copy of default_settings, else SettingsError."""
        if behavior_name in self.behaviors:
            return self.behaviors[behavior_name]
        if self.default_settings is not None:
            return self.default_settings.model_copy(deep=True)
        configured = ", ".join(self.behaviors) or "none"
        raise SettingsError(
            f"The behavior '{behavior_name}' has no entry in the config's behaviors "
            f"(configured: {configured}) and there are no default_settings. Add an entry for "
            f"'{behavior_name}' under behaviors, or set default_settings.",
            key_path=f"behaviors.{behavior_name}",
        )

    def resolve_behavior_name(self, env_behavior: str, env_id: str | None) -> str:
        """Names the behavior of a single-behavior env.

        The config's only behavior when it lists exactly one; else the env's own name
        ``env_behavior`` when the config lists it or no env id is known; else the env id's name
        by :func:`~asynctrainer.settings.behavior_name_for` (``CartPole-v1`` → ``CartPole``,
        ``pkg.mod:make_env`` → ``make_env``), the rule the gymnasium adapter names its env by.
        """
        if len(self.behaviors) == 1:
            return next(iter(self.behaviors))
        if env_id is None or env_behavior in self.behaviors:
            return env_behavior
        return behavior_name_for(env_id) or env_behavior

    def to_yaml_dict(self) -> dict[str, Any]:
        """The fully resolved config as plain YAML-safe types, for configuration.yaml."""
        return self.model_dump(mode="json")
