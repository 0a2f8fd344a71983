"""Fakes for testing the runtime in isolation: no TensorFlow, no learning.

``FakeTrainer`` follows the whole :class:`RLTrainer` contract, but its "update" only sleeps
(in the worker thread) and perturbs a numpy policy; ``fake_trainer_factory`` plugs it into
a :class:`Runner`. ``CountingEnv`` is a trivial scripted env with fixed-length episodes.
``random_trajectory`` makes a trajectory of random steps for trainer tests.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from asynctrainer.envs.spec import (
    ActionBatch,
    ActionSpec,
    BehaviorSpec,
    DecisionSteps,
    ObservationSpec,
    StepBatch,
    TerminalSteps,
)
from asynctrainer.runtime.contracts import TrainerContext
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.trainer import RLTrainer
from asynctrainer.runtime.trajectory import Trajectory

__all__ = ["CountingEnv", "FakeTrainer", "fake_trainer_factory", "random_snapshot", "random_trajectory"]


def random_trajectory(
    n: int,
    *,
    obs_size: int = 3,
    continuous: int = 1,
    rng: np.random.Generator | None = None,
    ends: bool = True,
    **fields: Any,
) -> Trajectory:
    """``n`` steps of random observations, rewards and actions (``continuous`` of them and one
    discrete branch of 2) at log-probability −1, ending in a terminal step when ``ends``;
    ``fields`` replace any of the trajectory's fields (``agent_id``, ``rewards``, ``group``, …)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    made = Trajectory(
        behavior_name="B",
        agent_id="a",
        obs=rng.normal(size=(n, obs_size)).astype(np.float32),
        next_obs=rng.normal(size=obs_size).astype(np.float32),
        actions_continuous=rng.normal(size=(n, continuous)).astype(np.float32),
        actions_discrete=rng.integers(0, 2, size=(n, 1)).astype(np.int32),
        log_probs=np.full(n, -1.0, np.float32),
        entropies=np.ones(n, np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        action_masks=None,
        policy_versions=np.zeros(n, np.int64),
        terminated=ends,
    )
    made = dataclasses.replace(made, **fields)
    if ends and "episode_return" not in fields:  # the episode is this trajectory
        made = dataclasses.replace(made, episode_return=float(made.rewards.sum()), episode_length=len(made))
    return made


def random_snapshot(name: str, spec: BehaviorSpec, version: int = 0, seed: int = 0, hidden: int = 8) -> PolicySnapshot:
    rng = np.random.default_rng(seed)
    a = spec.action_spec
    n_in = spec.observation_size
    return PolicySnapshot.create(
        name,
        version,
        0,
        spec,
        hidden=[(rng.normal(size=(n_in, hidden)), np.zeros(hidden))],
        discrete_head=(rng.normal(size=(hidden, a.mask_size)), np.zeros(a.mask_size)) if a.is_discrete() else None,
        continuous_head=(rng.normal(size=(hidden, a.continuous_size)), np.zeros(a.continuous_size))
        if a.is_continuous()
        else None,
        log_std=np.zeros(a.continuous_size) if a.is_continuous() else None,
    )


class FakeTrainer(RLTrainer[PolicySnapshot]):
    """A trainer whose update sleeps ``update_seconds`` in the worker thread (or raises ``fail_at_update``)."""

    def __init__(
        self,
        behavior_name: str,
        trainer_settings: Any,
        *,
        update_seconds: float = 0.0,
        fail_at_update: int | None = None,
        on_update: Callable[[FakeTrainer], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(behavior_name, trainer_settings, **kwargs)
        self.update_seconds = update_seconds
        self.fail_at_update = fail_at_update
        self.on_update = on_update
        self.buffer: list[Trajectory] = []
        self.buffer_steps = 0
        self.received: list[Trajectory] = []
        self.updated_batches: list[list[Trajectory]] = []
        self.update_threads: list[int] = []
        self.updates_finished = 0
        self.spec: BehaviorSpec | None = None

    def create_policy(self, behavior_id: str, behavior_spec: BehaviorSpec) -> PolicySnapshot:
        self.spec = behavior_spec
        return random_snapshot(behavior_id, behavior_spec)

    def _store_trajectory(self, trajectory: Trajectory) -> None:
        self.received.append(trajectory)
        self.buffer.append(trajectory)
        self.buffer_steps += len(trajectory)

    def _is_ready_update(self) -> bool:
        return self.buffer_steps >= self.trainer_settings.hyperparameters.buffer_size

    @property
    def update_threshold(self) -> int:
        return int(self.trainer_settings.hyperparameters.buffer_size)

    def _update_policy(self) -> dict[str, float]:
        self.update_threads.append(threading.get_ident())
        batch, self.buffer, self.buffer_steps = self.buffer, [], 0
        self.updated_batches.append(batch)
        if self.on_update is not None:
            self.on_update(self)
        if self.fail_at_update is not None and len(self.updated_batches) >= self.fail_at_update:
            raise RuntimeError("fake update failure")
        time.sleep(self.update_seconds)
        self.updates_finished += 1
        return {"Losses/Policy Loss": 0.0}

    def _algorithm_state(self) -> dict[str, np.ndarray]:
        # The fake's "weights" are a function of the version, so this is all there is to save.
        return {"updates_finished": np.array([self.updates_finished], np.int64)}

    def _restore_algorithm_state(self, state: Mapping[str, np.ndarray], *, weights_only: bool) -> None:
        if not weights_only:
            self.updates_finished = int(state["updates_finished"][0])

    def _make_snapshot(self, version: int) -> PolicySnapshot:
        assert self.spec is not None
        return random_snapshot(self.behavior_name, self.spec, version=version, seed=version)


def fake_trainer_factory(**options: Any) -> Callable[..., FakeTrainer]:
    """A Runner ``trainer_factory`` that builds FakeTrainers with ``options`` and records them."""
    made: list[FakeTrainer] = []

    def factory(name: str, settings: Any, spec: BehaviorSpec, context: TrainerContext) -> FakeTrainer:
        trainer = FakeTrainer(name, settings, stats_reporter=context.stats_reporter, **options)
        made.append(trainer)
        return trainer

    factory.made = made  # type: ignore[attr-defined]
    return factory


class CountingEnv:
    """``num_agents`` agents, one discrete branch of 2, episodes of exactly ``episode_length`` steps.

    The observation is the step count within the episode; the reward is 1 per step.
    Episodes that reach ``truncate_at`` (if set) end as interrupted instead of terminated.
    """

    def __init__(
        self,
        name: str = "Counter",
        *,
        num_agents: int = 2,
        episode_length: int = 5,
        truncate: bool = False,
        step_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.num_agents = num_agents
        self.episode_length = episode_length
        self.truncate = truncate
        self.step_delay = step_delay
        self._spec = BehaviorSpec((ObservationSpec((1,)),), ActionSpec.create_discrete((2,)))
        self._t = np.zeros(num_agents, np.int64)
        self._ids = np.arange(num_agents, dtype=np.int64)
        self.steps = 0
        self.closed = False

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {self.name: self._spec}

    def _decision(self, reward: np.ndarray) -> DecisionSteps:
        return DecisionSteps([self._t[:, None].astype(np.float32)], reward.astype(np.float32), self._ids.copy())

    async def reset(self) -> dict[str, StepBatch]:
        self._t[:] = 0
        return {self.name: StepBatch(self._decision(np.zeros(self.num_agents)), TerminalSteps.empty(self._spec))}

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        import anyio

        if self.step_delay:
            await anyio.sleep(self.step_delay)
        else:
            await anyio.lowlevel.checkpoint()
        assert len(actions[self.name].agent_id) == self.num_agents
        self.steps += 1
        self._t += 1
        ended = self._t >= self.episode_length
        terminal = TerminalSteps.empty(self._spec)
        if ended.any():
            idx = np.flatnonzero(ended)
            terminal = TerminalSteps(
                [self._t[idx, None].astype(np.float32)],
                np.ones(len(idx), np.float32),
                self._ids[idx],
                np.full(len(idx), self.truncate),
            )
            self._t[ended] = 0
        reward = np.where(ended, 0.0, 1.0)
        return {self.name: StepBatch(self._decision(reward), terminal)}

    async def aclose(self) -> None:
        self.closed = True
