"""Behavior specs and the per-step data an env exchanges with the runtime (ML-Agents' shapes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from asynctrainer.errors import SpecError

__all__ = [
    "DIM_NONE",
    "DIM_TRANSLATIONAL_EQUIVARIANCE",
    "DIM_UNSPECIFIED",
    "DIM_VARIABLE_SIZE",
    "ActionBatch",
    "ActionSpec",
    "BehaviorSpec",
    "DecisionSteps",
    "EnvStat",
    "ObservationSpec",
    "ObservationType",
    "StepBatch",
    "TerminalSteps",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]


#: ML-Agents' dimension property flags, one per axis of an observation.
DIM_UNSPECIFIED, DIM_NONE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_VARIABLE_SIZE = 0, 1, 2, 4

ObservationType = Literal["default", "goal_signal"]


@dataclass(frozen=True)
class ObservationSpec:
    """Shape of one observation of one agent (without the batch axis).

    :ivar dimension_properties: ML-Agents' flags per axis (``DIM_*``); empty when unknown. A
        visual observation is channel-last, ``(H, W, C)`` with ``(2, 2, 1)``; a variable-length
        one (Unity's buffer sensor) is ``(max_entities, entity_size)`` with ``(4, 1)``.
    :ivar observation_type: ``goal_signal`` for a goal or task input, else ``default``.
    """

    shape: tuple[int, ...]
    name: str = ""
    dimension_properties: tuple[int, ...] = ()
    observation_type: ObservationType = "default"

    @property
    def is_visual(self) -> bool:
        return len(self.shape) == 3 and DIM_TRANSLATIONAL_EQUIVARIANCE in self.dimension_properties

    @property
    def is_variable_length(self) -> bool:
        return DIM_VARIABLE_SIZE in self.dimension_properties

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class ActionSpec:
    """ML-Agents' action spec: a continuous part and a tuple of discrete branch sizes."""

    continuous_size: int = 0
    discrete_branches: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.continuous_size < 0 or any(b < 1 for b in self.discrete_branches):
            raise SpecError(
                f"ActionSpec({self.continuous_size}, {self.discrete_branches}) is invalid: "
                "continuous_size must be >= 0 and every discrete branch >= 1."
            )
        if self.continuous_size == 0 and not self.discrete_branches:
            raise SpecError("ActionSpec has no actions: give continuous_size > 0 or discrete branches.")

    @classmethod
    def create_continuous(cls, size: int) -> ActionSpec:
        return cls(size, ())

    @classmethod
    def create_discrete(cls, branches: tuple[int, ...]) -> ActionSpec:
        return cls(0, tuple(branches))

    @property
    def discrete_size(self) -> int:
        """Number of discrete branches (ML-Agents' name)."""
        return len(self.discrete_branches)

    @property
    def mask_size(self) -> int:
        return int(sum(self.discrete_branches))

    def is_discrete(self) -> bool:
        return self.discrete_size > 0

    def one_hot(self, discrete: npt.NDArray[np.integer]) -> FloatArray:
        """Discrete actions ``[n, branches]`` as one one-hot block per branch, side by side: ``[n, mask_size]``."""
        n = int(discrete.shape[0])
        out = np.zeros((n, self.mask_size), np.float32)
        start = 0
        for b, size in enumerate(self.discrete_branches):
            out[np.arange(n), start + discrete[:, b]] = 1.0
            start += size
        return out

    def is_continuous(self) -> bool:
        return self.continuous_size > 0


@dataclass(frozen=True)
class BehaviorSpec:
    observation_specs: tuple[ObservationSpec, ...]
    action_spec: ActionSpec

    @property
    def observation_size(self) -> int:
        """Length of all observations flattened and concatenated."""
        return sum(o.size for o in self.observation_specs)


def _empty_obs(specs: tuple[ObservationSpec, ...]) -> list[FloatArray]:
    return [np.zeros((0, *s.shape), np.float32) for s in specs]


@dataclass(frozen=True)
class DecisionSteps:
    """Agents that need an action now.

    ``obs[i]`` has shape ``[n_agents, *observation_specs[i].shape]``; ``action_mask`` is one
    boolean array ``[n_agents, sum(branches)]`` where True means *masked* (forbidden), as in
    ML-Agents, or None when every action is allowed.
    """

    obs: list[FloatArray]
    reward: FloatArray
    agent_id: npt.NDArray[np.int64]
    action_mask: npt.NDArray[np.bool_] | None = None
    #: Per agent: its group (0 = none) and the group reward since its last step, or None without groups.
    group_id: npt.NDArray[np.int64] | None = None
    group_reward: FloatArray | None = None

    def __len__(self) -> int:
        return int(self.agent_id.shape[0])

    @classmethod
    def empty(cls, spec: BehaviorSpec) -> DecisionSteps:
        return cls(_empty_obs(spec.observation_specs), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class TerminalSteps:
    """Agents whose episode ended at this step; ``interrupted`` marks truncations (no true terminal)."""

    obs: list[FloatArray]
    reward: FloatArray
    agent_id: npt.NDArray[np.int64]
    interrupted: npt.NDArray[np.bool_]
    group_id: npt.NDArray[np.int64] | None = None
    group_reward: FloatArray | None = None

    def __len__(self) -> int:
        return int(self.agent_id.shape[0])

    @classmethod
    def empty(cls, spec: BehaviorSpec) -> TerminalSteps:
        return cls(
            _empty_obs(spec.observation_specs),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, bool),
        )


class EnvStat(NamedTuple):
    """A statistic an env reports (e.g. the game's ``StatsRecorder`` values), with how it is summarised."""

    key: str
    value: float
    aggregation: Literal["average", "most_recent", "sum", "histogram"] = "average"


@dataclass(frozen=True)
class StepBatch:
    """What one behavior's agents report after a reset or a step."""

    decision: DecisionSteps
    terminal: TerminalSteps
    #: Statistics the env wants reported under this behavior since the last step.
    stats: tuple[EnvStat, ...] = ()


class ActionBatch(NamedTuple):
    """Actions for the agents of one ``DecisionSteps``, in the same order.

    ``continuous`` is float32 ``[n, continuous_size]`` in [-1, 1]; ``discrete`` is int32
    ``[n, n_branches]``.
    """

    continuous: FloatArray
    discrete: IntArray
    agent_id: npt.NDArray[np.int64]
