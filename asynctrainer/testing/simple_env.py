"""ML-Agents' SimpleEnvironment as an :class:`AsyncEnv` (the env of ML-Agents' own trainer tests).

Each agent has one position per action dimension, starting at 0; every episode draws a
goal of −1 or +1, shown as every observation (each filled with the goal: ``num_vector``
vectors of length 1, ``num_visual`` images of ``vis_obs_size`` and ``num_var_len``
variable-length observations of ``var_len_obs_size``, as ML-Agents' variants; of a
variable-length one, a random number of entities, at least one, is present each step and the
others are zero, so attention must mask them).
Discrete branches (size 2) move a position by
±``step_size``; continuous actions move it by the action clamped to ±``step_size``. The
episode ends when every position reaches ±1: the last reward is
``SUCCESS_REWARD · mean(position · goal)``, every other step costs ``TIME_PENALTY``.
The optimal 1-D return at step size 0.2 is 1.02.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from asynctrainer.envs.spec import (
    DIM_NONE,
    DIM_TRANSLATIONAL_EQUIVARIANCE,
    DIM_VARIABLE_SIZE,
    ActionBatch,
    ActionSpec,
    BehaviorSpec,
    DecisionSteps,
    ObservationSpec,
    StepBatch,
    TerminalSteps,
)
from asynctrainer.errors import SpecError

__all__ = ["MemoryEnvironment", "MultiAgentEnvironment", "SimpleEnvironment"]

STEP_SIZE = 0.2
TIME_PENALTY = 0.01
MIN_STEPS = int(1.0 / STEP_SIZE) + 1
SUCCESS_REWARD = 1.0 + MIN_STEPS * TIME_PENALTY
#: ML-Agents' visual observation size (channel-last here: height, width, channels).
VIS_OBS_SIZE = (20, 20, 3)
#: ML-Agents' variable-length observation size: (max entities, entity size).
VAR_LEN_SIZE = (10, 5)


class SimpleEnvironment:
    """The 1-D/2-D test env; ``action_sizes=(continuous, discrete)``.

    :param behavior_names: one behavior per name, each with ``num_agents`` agents.
    :param max_episode_steps: interrupt (truncate) episodes longer than this.
    :param masked_actions: per behavior, ``{branch: [forbidden indices]}`` applied on every step
        (for mask tests; a forbidden move is never needed to reach the goal when the goal matches).
    :param num_vector: vector observations (``obs_<i>``, shape ``(1,)``), then ``num_visual``
        visual ones (``visual_<i>``, ``vis_obs_size`` channel-last), then ``num_var_len``
        variable-length ones (``entities_<i>``, ``var_len_obs_size``) per agent.
    :param goal_indices: the observations (by index) that are goal signals
        (``observation_type="goal_signal"``), as ML-Agents' ``goal_indices``. Only they show the
        goal then; the others show the agent's mean position, so a policy must read the goal
        from its goal signals.
    :ivar final_rewards: episode returns per behavior, in completion order (ML-Agents' name).
    """

    def __init__(
        self,
        behavior_names: list[str] | str = "1D",
        *,
        action_sizes: tuple[int, int] = (0, 1),
        step_size: float = STEP_SIZE,
        num_agents: int = 1,
        seed: int = 0,
        max_episode_steps: int = 100,
        discrete_branch_size: int = 2,
        masked_actions: Mapping[int, list[int]] | None = None,
        num_vector: int = 1,
        num_visual: int = 0,
        vis_obs_size: tuple[int, int, int] = VIS_OBS_SIZE,
        num_var_len: int = 0,
        var_len_obs_size: tuple[int, int] = VAR_LEN_SIZE,
        goal_indices: tuple[int, ...] = (),
    ) -> None:
        names = [behavior_names] if isinstance(behavior_names, str) else list(behavior_names)
        continuous, discrete = action_sizes
        self.action_spec = ActionSpec(continuous, (discrete_branch_size,) * discrete)
        self.num_positions = continuous + discrete
        visual = (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)
        entities = (DIM_VARIABLE_SIZE, DIM_NONE)
        observations = (
            tuple(ObservationSpec((1,), f"obs_{i}") for i in range(num_vector))
            + tuple(ObservationSpec(tuple(vis_obs_size), f"visual_{i}", visual) for i in range(num_visual))
            + tuple(ObservationSpec(tuple(var_len_obs_size), f"entities_{i}", entities) for i in range(num_var_len))
        )
        if not observations:
            raise SpecError(
                "SimpleEnvironment needs at least one observation (num_vector + num_visual + num_var_len > 0)."
            )
        if any(not 0 <= i < len(observations) for i in goal_indices):
            raise SpecError(
                f"SimpleEnvironment: goal_indices {goal_indices} must index its {len(observations)} observations."
            )
        observations = tuple(
            ObservationSpec(o.shape, o.name, o.dimension_properties, "goal_signal") if i in goal_indices else o
            for i, o in enumerate(observations)
        )
        self._specs = {n: BehaviorSpec(observations, self.action_spec) for n in names}
        self.step_size = step_size
        self.num_agents = num_agents
        self.max_episode_steps = max_episode_steps
        self.discrete_branch_size = discrete_branch_size
        self.masked_actions = dict(masked_actions or {})
        self._rng = np.random.default_rng(seed)
        self._ids = np.arange(num_agents, dtype=np.int64)
        self.positions = {n: np.zeros((num_agents, self.num_positions), np.float32) for n in names}
        self.goals = {n: np.ones(num_agents, np.float32) for n in names}
        self.episode_steps = {n: np.zeros(num_agents, np.int64) for n in names}
        self.returns = {n: np.zeros(num_agents, np.float32) for n in names}
        self.final_rewards: dict[str, list[float]] = {n: [] for n in names}
        self.actions_taken: dict[str, list[np.ndarray]] = {n: [] for n in names}
        self.parameters_received: list[dict[str, Any]] = []
        self.closed = False

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    def _mask(self) -> np.ndarray | None:
        if not self.action_spec.is_discrete():
            return None
        mask = np.zeros((self.num_agents, self.action_spec.mask_size), bool)
        for branch, forbidden in self.masked_actions.items():
            for a in forbidden:
                mask[:, branch * self.discrete_branch_size + a] = True
        return mask

    def _reset_agents(self, name: str, which: np.ndarray) -> None:
        self.positions[name][which] = 0.0
        self.goals[name][which] = self._rng.choice(np.array([-1.0, 1.0], np.float32), size=int(which.sum()))
        self.episode_steps[name][which] = 0
        self.returns[name][which] = 0.0

    def _obs(self, name: str, which: np.ndarray | slice = slice(None)) -> list[np.ndarray]:
        goal = self.goals[name][which]
        specs = self._specs[name].observation_specs
        conditioned = any(o.observation_type == "goal_signal" for o in specs)
        position = self.positions[name][which].mean(axis=1)
        out = []
        for o in specs:
            shown = position if conditioned and o.observation_type != "goal_signal" else goal
            x = np.broadcast_to(shown.reshape(-1, *(1,) * len(o.shape)), (len(goal), *o.shape)).astype(np.float32)
            if o.is_variable_length:
                present = self._rng.integers(1, o.shape[0], size=len(goal), endpoint=True)
                x = x * (np.arange(o.shape[0])[None, :] < present[:, None])[:, :, None]
            out.append(x)
        return out

    def set_environment_parameters(self, values: Mapping[str, Any]) -> None:
        """Takes ``step_size`` (a float) from the run's ``environment_parameters``, for the episodes that follow;
        every set of values received is kept in :attr:`parameters_received`."""
        self.parameters_received.append(dict(values))
        if isinstance(values.get("step_size"), float):
            self.step_size = float(values["step_size"])

    async def reset(self) -> dict[str, StepBatch]:
        out = {}
        for name, spec in self._specs.items():
            self._reset_agents(name, np.ones(self.num_agents, bool))
            decision = DecisionSteps(
                self._obs(name), np.zeros(self.num_agents, np.float32), self._ids.copy(), self._mask()
            )
            out[name] = StepBatch(decision, TerminalSteps.empty(spec))
        return out

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        out = {}
        for name in self._specs:
            batch = actions.get(name)
            if batch is None or len(batch.agent_id) != self.num_agents:
                raise SpecError(f"SimpleEnvironment: behavior '{name}' needs actions for {self.num_agents} agents.")
            self.actions_taken[name].append(batch.discrete.copy())
            moves = []
            if self.action_spec.continuous_size:
                moves.append(np.clip(batch.continuous, -self.step_size, self.step_size))
            if self.action_spec.discrete_size:
                moves.append(np.where(batch.discrete == 1, self.step_size, -self.step_size).astype(np.float32))
            pos = np.clip(self.positions[name] + np.concatenate(moves, axis=1), -1.0, 1.0)
            self.positions[name] = pos
            self.episode_steps[name] += 1
            done = (np.abs(pos) >= 1.0).all(axis=1)
            truncated = ~done & (self.episode_steps[name] >= self.max_episode_steps)
            reward = np.where(
                done, SUCCESS_REWARD * (pos * self.goals[name][:, None]).mean(axis=1), -TIME_PENALTY
            ).astype(np.float32)
            self.returns[name] += reward
            ended = done | truncated
            if ended.any():
                idx = np.flatnonzero(ended)
                terminal = TerminalSteps(self._obs(name, idx), reward[idx], self._ids[idx], truncated[idx])
                self.final_rewards[name].extend(float(r) for r in self.returns[name][ended])
                self._reset_agents(name, ended)
            else:
                terminal = TerminalSteps.empty(self._specs[name])
            decision = DecisionSteps(
                self._obs(name), np.where(ended, 0.0, reward).astype(np.float32), self._ids.copy(), self._mask()
            )
            out[name] = StepBatch(decision, terminal)
        return out

    def mean_final_reward(self, behavior: str, last: int = 5) -> float:
        """Mean return of the last ``last`` episodes (ML-Agents' ``check_environment_trains`` measure).

        :raises ValueError: when fewer episodes have ended.
        """
        rewards = self.final_rewards[behavior][-last:]
        if len(rewards) < last:
            raise ValueError(f"only {len(rewards)} episodes of '{behavior}' ended; {last} are needed")
        return float(np.mean(rewards))

    async def aclose(self) -> None:
        self.closed = True


class MemoryEnvironment(SimpleEnvironment):
    """ML-Agents' MemoryEnvironment: the goal is shown only while an episode is ``show_steps`` steps old or younger.

    After that every observation is 0, so a policy must remember the goal to keep moving
    towards it: a feed-forward policy falls short of the 0.9 bar that a recurrent one reaches.
    """

    def __init__(self, behavior_names: list[str] | str = "1D", *, show_steps: int = 2, **kwargs: Any) -> None:
        super().__init__(behavior_names, **kwargs)
        self.show_steps = show_steps

    def _obs(self, name: str, which: np.ndarray | slice = slice(None)) -> list[np.ndarray]:
        shown = (self.episode_steps[name][which] <= self.show_steps).astype(np.float32)
        return [(o * shown.reshape(-1, *(1,) * (o.ndim - 1))).astype(np.float32) for o in super()._obs(name, which)]


class MultiAgentEnvironment(SimpleEnvironment):
    """ML-Agents' MultiAgentEnvironment: per behavior, ``num_agents`` agents (2) in one group
    (``group_id`` 1), each with a goal and positions of its own, as SimpleEnvironment's.

    An agent whose positions all reach ±1 leaves the group's episode (a terminal step). While
    others play on it is given ``min(−TIME_PENALTY, r)``, ``r`` being the reward SimpleEnvironment
    would give; the last one to finish is given 0 and the group reward ``r`` (of several finishing
    together, the one with the highest id is the last). Then the whole group starts again.
    After ``max_episode_steps`` the players left are interrupted. Every finisher's ``r`` goes
    into :attr:`final_rewards`, as ML-Agents logs it.
    """

    def __init__(self, behavior_names: list[str] | str = "1D", *, num_agents: int = 2, **kwargs: Any) -> None:
        super().__init__(behavior_names, num_agents=num_agents, **kwargs)
        self.playing = {n: np.ones(num_agents, bool) for n in self._specs}
        self._group = np.ones(num_agents, np.int64)

    async def reset(self) -> dict[str, StepBatch]:
        for name in self._specs:
            self.playing[name][:] = True
        out = await super().reset()
        return {name: self._grouped(b, np.zeros(self.num_agents, np.float32)) for name, b in out.items()}

    def _grouped(self, batch: StepBatch, decision_group_reward: np.ndarray) -> StepBatch:
        d, t = batch.decision, batch.terminal
        return StepBatch(
            DecisionSteps(d.obs, d.reward, d.agent_id, d.action_mask, self._group[d.agent_id], decision_group_reward),
            t,
        )

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        out = {}
        for name in self._specs:
            playing = np.flatnonzero(self.playing[name])
            batch = actions.get(name)
            if batch is None or sorted(batch.agent_id.tolist()) != playing.tolist():
                raise SpecError(f"MultiAgentEnvironment: behavior '{name}' needs actions for its agents {playing}.")
            order = np.argsort(batch.agent_id)
            moves = []
            if self.action_spec.continuous_size:
                moves.append(np.clip(batch.continuous[order], -self.step_size, self.step_size))
            if self.action_spec.discrete_size:
                moves.append(np.where(batch.discrete[order] == 1, self.step_size, -self.step_size).astype(np.float32))
            pos = np.clip(self.positions[name][playing] + np.concatenate(moves, axis=1), -1.0, 1.0)
            self.positions[name][playing] = pos
            self.episode_steps[name][playing] += 1
            finished = (np.abs(pos) >= 1.0).all(axis=1)
            success = (SUCCESS_REWARD * (pos * self.goals[name][playing][:, None]).mean(axis=1)).astype(np.float32)
            reward = np.where(finished, np.minimum(-TIME_PENALTY, success), -TIME_PENALTY).astype(np.float32)
            group_reward = np.zeros(len(playing), np.float32)
            self.final_rewards[name].extend(float(r) for r in success[finished])
            still = playing[~finished]
            truncated = len(still) > 0 and bool((self.episode_steps[name][still] >= self.max_episode_steps).any())
            group_over = truncated or not len(still)
            if not len(still):  # the last one to finish: 0 for itself, its reward for the group
                last = int(np.flatnonzero(finished)[-1])
                reward[last], group_reward[last] = 0.0, success[last]
            ends = finished | group_over
            ended = playing[ends]
            terminal = TerminalSteps(
                self._obs(name, ended),
                reward[ends],
                self._ids[ended],
                np.logical_and(~finished, group_over)[ends],
                self._group[ended],
                group_reward[ends],
            )
            self.playing[name][ended] = False
            if group_over:
                self._reset_agents(name, np.ones(self.num_agents, bool))
                self.playing[name][:] = True
            asking = np.flatnonzero(self.playing[name])
            rewards = np.zeros(len(asking), np.float32) if group_over else reward[~finished]
            mask = self._mask()
            decision = DecisionSteps(
                self._obs(name, asking),
                rewards,
                self._ids[asking],
                None if mask is None else mask[asking],
                self._group[asking],
                np.zeros(len(asking), np.float32),
            )
            out[name] = StepBatch(decision, terminal)
        return out
