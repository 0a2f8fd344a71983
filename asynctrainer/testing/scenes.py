"""The behaviors of ML-Agents' multi-agent example scenes, as a game the Unity stand-in can play.

Each scene lists its behaviors as ML-Agents' documentation of the example environments gives
them: behavior names and teams, agents per team, observation sizes, action branches, and which
agents form a multi-agent group. The game itself is not the scene's: every step each agent
observes random numbers of the right shapes; an episode lasts ``episode_steps`` steps, after which
one team, drawn at random, wins (+1 for it, −1 for the others; for one team alone, +1 or −1 at
random), as a group reward for grouped agents and an individual reward otherwise. That is enough
for a trainer to meet the scene's specs, teams and groups and start training on them.

- **SoccerTwos**: ``SoccerTwos?team=0`` and ``?team=1``, two agents each in a group; two ray
  sensors (264 and 72 values: 11 forward and 3 backward rays, 6 tags, 3 stacks); three discrete
  branches of 3.
- **StrikersVsGoalie**: ``Striker?team=0`` (two agents in a group; 231 + 63 ray values) and
  ``Goalie?team=1`` (one agent in a group of its own; 738 ray values); three branches of 3.
- **PushBlockCollab**: ``PushBlockCollab``, three agents in one group; one grid sensor (the
  documentation gives its tags, not its size: 20 × 20 cells of 6 tags here); one branch of 7.
- **WallJump**: ``SmallWallJump`` and ``BigWallJump``, one agent each; 74 values; branches 3, 3, 3, 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from asynctrainer.envs.spec import (
    DIM_NONE,
    DIM_TRANSLATIONAL_EQUIVARIANCE,
    ActionBatch,
    ActionSpec,
    BehaviorSpec,
    DecisionSteps,
    ObservationSpec,
    StepBatch,
    TerminalSteps,
)
from asynctrainer.errors import SpecError
from asynctrainer.settings.naming import split_behavior_id

__all__ = ["SCENES", "SceneBehavior", "SceneEnvironment"]

_GRID = (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)


@dataclass(frozen=True)
class SceneBehavior:
    """One behavior of a scene: its id (``Name?team=N``), agents, specs, and whether its agents are a group."""

    behavior_id: str
    agents: int
    observations: tuple[ObservationSpec, ...]
    actions: ActionSpec
    grouped: bool = True

    @property
    def spec(self) -> BehaviorSpec:
        return BehaviorSpec(self.observations, self.actions)


def _rays(*sizes: int) -> tuple[ObservationSpec, ...]:
    return tuple(ObservationSpec((size,), f"RayPerceptionSensor_{i}") for i, size in enumerate(sizes))


SOCCER_ACTIONS = ActionSpec(0, (3, 3, 3))
SCENES: dict[str, tuple[SceneBehavior, ...]] = {
    "SoccerTwos": (
        SceneBehavior("SoccerTwos?team=0", 2, _rays(264, 72), SOCCER_ACTIONS),
        SceneBehavior("SoccerTwos?team=1", 2, _rays(264, 72), SOCCER_ACTIONS),
    ),
    "StrikersVsGoalie": (
        SceneBehavior("Striker?team=0", 2, _rays(231, 63), SOCCER_ACTIONS),
        SceneBehavior("Goalie?team=1", 1, _rays(738), SOCCER_ACTIONS),
    ),
    "PushBlockCollab": (
        SceneBehavior(
            "PushBlockCollab?team=0", 3, (ObservationSpec((20, 20, 6), "GridSensor", _GRID),), ActionSpec(0, (7,))
        ),
    ),
    "WallJump": (
        SceneBehavior("SmallWallJump?team=0", 1, _rays(74), ActionSpec(0, (3, 3, 3, 2)), grouped=False),
        SceneBehavior("BigWallJump?team=0", 1, _rays(74), ActionSpec(0, (3, 3, 3, 2)), grouped=False),
    ),
}


class SceneEnvironment:
    """A scene of :data:`SCENES` as an :class:`~asynctrainer.envs.base.AsyncEnv` (see the module docs).

    Agent ids are unique across the scene; a grouped behavior's agents share a group id of
    their own (1, 2, … in the scene's order). :attr:`actions_taken` counts the actions received
    per behavior, :attr:`parameters_received` keeps the environment parameters set.
    """

    def __init__(self, scene: str, *, episode_steps: int = 20, seed: int = 0) -> None:
        if scene not in SCENES:
            raise SpecError(f"The stand-in has no scene '{scene}': it has {', '.join(SCENES)}.")
        self.scene = scene
        self.behaviors = {b.behavior_id: b for b in SCENES[scene]}
        self.episode_steps = episode_steps
        self._rng = np.random.default_rng(seed)
        self._ids: dict[str, np.ndarray] = {}
        self._groups: dict[str, int] = {}
        start = 0
        for b in SCENES[scene]:
            self._ids[b.behavior_id] = np.arange(start, start + b.agents, dtype=np.int64)
            self._groups[b.behavior_id] = 1 + len([g for g in self._groups.values() if g]) if b.grouped else 0
            start += b.agents
        self.step_count = 0
        self.episodes = 0
        self.actions_taken: dict[str, int] = dict.fromkeys(self.behaviors, 0)
        self.parameters_received: list[dict[str, object]] = []

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {name: b.spec for name, b in self.behaviors.items()}

    def set_environment_parameters(self, values: Mapping[str, object]) -> None:
        self.parameters_received.append(dict(values))

    def _obs(self, b: SceneBehavior) -> list[np.ndarray]:
        return [self._rng.normal(size=(b.agents, *o.shape)).astype(np.float32) for o in b.observations]

    def _group(self, name: str, n: int, reward: float = 0.0) -> tuple[np.ndarray | None, np.ndarray | None]:
        group = self._groups[name]
        if not group:
            return None, None
        return np.full(n, group, np.int64), np.full(n, reward, np.float32)

    def _decisions(self, name: str) -> DecisionSteps:
        """Every agent of the behavior asks for a decision (rewards come only at episode ends)."""
        b = self.behaviors[name]
        return DecisionSteps(
            self._obs(b), np.zeros(b.agents, np.float32), self._ids[name].copy(), None, *self._group(name, b.agents)
        )

    def _playing(self) -> dict[str, StepBatch]:
        return {
            name: StepBatch(self._decisions(name), TerminalSteps.empty(b.spec)) for name, b in self.behaviors.items()
        }

    async def reset(self) -> dict[str, StepBatch]:
        self.step_count = 0
        return self._playing()

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        for name, b in self.behaviors.items():
            batch = actions.get(name)
            if batch is None or len(batch.agent_id) != b.agents:
                raise SpecError(f"SceneEnvironment: behavior '{name}' needs actions for its {b.agents} agents.")
            self.actions_taken[name] += b.agents
        self.step_count += 1
        if self.step_count < self.episode_steps:
            return self._playing()
        self.step_count = 0
        self.episodes += 1
        teams = sorted({split_behavior_id(name)[1] for name in self.behaviors})
        winner = int(self._rng.choice(teams)) if len(teams) > 1 else None
        alone = float(self._rng.choice([-1.0, 1.0]))
        out = {}
        for name, b in self.behaviors.items():
            won = alone if winner is None else (1.0 if split_behavior_id(name)[1] == winner else -1.0)
            grouped = self._groups[name] > 0
            terminal = TerminalSteps(
                self._obs(b),
                np.full(b.agents, 0.0 if grouped else won, np.float32),
                self._ids[name].copy(),
                np.zeros(b.agents, bool),
                *self._group(name, b.agents, won),
            )
            out[name] = StepBatch(self._decisions(name), terminal)
        return out

    async def aclose(self) -> None:
        pass
