"""What the Runner needs from the layers above it, as small protocols.

The runtime names no trainer, checkpoint format or executor: ``asynctrainer.app`` fills these
protocols with PPO/SAC, the checkpoint manager and the local or Ray executor, and a test fills
them with fakes (``asynctrainer.testing``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from anyio.abc import TaskStatus

from asynctrainer.envs.base import AsyncEnv
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.runtime.env_loop import BehaviorLink, EnvLoopStats
from asynctrainer.runtime.stats import StatsReporter
from asynctrainer.runtime.trainer import RLTrainer
from asynctrainer.settings import EnvSettings, TrainerSettings

__all__ = [
    "CheckpointBackend",
    "Checkpointer",
    "EnvExecutor",
    "EnvJob",
    "RestoreRequest",
    "TrainerContext",
    "TrainerFactory",
]


@dataclass(frozen=True)
class TrainerContext:
    """What a trainer factory gets besides the behavior's settings and spec."""

    seed: int
    artifact_path: Path | None
    training: bool
    stats_reporter: StatsReporter
    resume: bool = False


class TrainerFactory(Protocol):
    """Builds the trainer of one behavior (``asynctrainer.app.create_trainer`` by ``trainer_type``)."""

    def __call__(
        self,
        behavior_name: str,
        trainer_settings: TrainerSettings,
        behavior_spec: BehaviorSpec,
        context: TrainerContext,
    ) -> RLTrainer[Any]: ...


@dataclass(frozen=True)
class RestoreRequest:
    """Where a trainer's initial state comes from.

    :ivar run_dir: this run's directory (None: the run writes no files).
    :ivar resume: ``--resume`` (or ``--inference``): everything from the run's newest checkpoint.
    :ivar initialize_from: ``--initialize-from``: a run directory whose newest checkpoint gives weights only.
    :ivar init_path: the behavior's ``init_path``: a checkpoint or a behavior directory, weights only.
    """

    run_dir: Path | None
    resume: bool
    initialize_from: Path | None
    init_path: Path | None


class Checkpointer(Protocol):
    """Saves the trainers of one run: periodic requests in the background, and a final save."""

    def attach(self, trainer: RLTrainer[Any]) -> None:
        """Serve ``trainer``'s save requests (it sets the trainer's ``checkpoint_requester``)."""

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Serve save requests until cancelled."""

    async def final_save(self) -> list[Path]:
        """Save every attached trainer and export its final model; returns the paths written."""

    def saved_lessons(self) -> dict[str, int]:
        """The curricula's lesson numbers the run saved last (``--resume``), by parameter."""

    def record_lessons(self, lessons: Mapping[str, int]) -> None:
        """Keep the curricula's lesson numbers with the run's next checkpoint."""


class CheckpointBackend(Protocol):
    """Opens a run's checkpointer and restores trainers (``asynctrainer.checkpoints``)."""

    def open(self, run_dir: Path, *, resume: bool, switch_interval: float | None) -> Checkpointer: ...

    async def restore(self, trainer: RLTrainer[Any], request: RestoreRequest) -> Path | None:
        """Load ``trainer``'s state as ``request`` says; returns the checkpoint used, or None."""


@dataclass(frozen=True)
class EnvJob:
    """What an env executor runs: the envs, the behaviors' links, and what it may use besides.

    :ivar envs: the envs the Runner made, one env loop each (their specs named the behaviors).
    :ivar links: each env behavior's link: slot to act from, channel to send to.
    :ivar rng: the acting RNG, derived from the run's seed.
    :ivar env_source: what the user passed as the env (an object or a factory), for executors
        that build env copies elsewhere.
    :ivar env_settings: the run's ``env_settings``.
    :ivar stats: the counters the Runner reports.
    :ivar reporters: each behavior's stats reporter, by env behavior name.
    """

    envs: Sequence[AsyncEnv]
    links: Mapping[str, BehaviorLink]
    rng: np.random.Generator
    env_source: Any
    env_settings: EnvSettings
    stats: EnvLoopStats
    reporters: Mapping[str, StatsReporter]

    @property
    def env(self) -> AsyncEnv:
        """The first env (the only one unless the run has several, e.g. ``--num-envs`` Unity players)."""
        return self.envs[0]


class EnvExecutor(Protocol):
    """Steps the env and feeds the links' channels until cancelled; reports readiness after the first reset."""

    async def run(self, job: EnvJob, *, task_status: TaskStatus[None]) -> None: ...
