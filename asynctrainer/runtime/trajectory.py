"""Trajectories: the unit of experience sent from env loops to trainers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["GroupData", "Trajectory"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class GroupData:
    """What an agent's group (ML-Agents' ``group_id`` > 0: agents that share a group reward) did
    beside it, step by step, for POCA's centralised critic.

    ``M`` is the most groupmates the trajectory saw at once; a step with fewer has NaN rows in
    ``mates_obs`` (and zero actions) where the missing ones would be.

    :ivar rewards: the group reward that followed each step, ``[T]``.
    :ivar mates_obs: the groupmates' observations at each step, ``[T, M, obs_size]``.
    :ivar mates_continuous: their unclipped continuous actions at that step, ``[T, M, continuous_size]``.
    :ivar mates_discrete: their discrete actions, ``[T, M, n_branches]``.
    :ivar next_mates_obs: the groupmates after the last step, ``[M, obs_size]``: those still playing
        and those whose episode ended in that step too (their last observations).
    :ivar all_done: every agent of the group had ended its episode when this trajectory ended
        (an agent that ends early is not done for the critic: its group plays on).
    """

    group_id: int
    rewards: F32
    mates_obs: F32
    mates_continuous: F32
    mates_discrete: npt.NDArray[np.int32]
    next_mates_obs: F32
    all_done: bool

    @property
    def max_mates(self) -> int:
        return int(self.mates_obs.shape[1])


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Consecutive experiences of one agent, cut at an episode end or at ``time_horizon``.

    Index ``t`` holds the observation an action was chosen from, that action, its
    behavior-policy log-probability, the reward that followed and the version of the
    snapshot that chose it. ``next_obs`` is the observation after the last step: the
    learner bootstraps from its value unless ``terminated`` (a true terminal, value 0).

    :ivar actions_continuous: the *unclipped* Gaussian samples, ``[T, continuous_size]``.
    :ivar action_masks: 1 = allowed, ``[T, sum(branches)]``, or None when nothing is masked.
    :ivar episode_return: the whole episode's return, on the trajectory that ends it.
    :ivar memories: a recurrent policy's memory fed in at each step, ``[T, memory_size]``, or None.
    :ivar group: the agent's group beside it (:class:`GroupData`), or None when it is in no group.
    """

    behavior_name: str
    agent_id: str
    obs: F32
    next_obs: F32
    actions_continuous: F32
    actions_discrete: npt.NDArray[np.int32]
    log_probs: F32
    entropies: F32
    rewards: F32
    action_masks: F32 | None
    policy_versions: npt.NDArray[np.int64]
    terminated: bool = False
    interrupted: bool = False
    episode_return: float | None = None
    episode_length: int | None = None
    memories: F32 | None = None
    group: GroupData | None = None

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def extrinsic_rewards(self) -> F32:
        """The reward of ML-Agents' extrinsic signal at each step: the agent's own plus its group's."""
        return self.rewards if self.group is None else self.rewards + self.group.rewards

    @property
    def done_reached(self) -> bool:
        """True when the episode ended (terminated or interrupted) at the last step."""
        return self.terminated or self.interrupted

    @property
    def oldest_version(self) -> int:
        return int(self.policy_versions.min()) if len(self) else 0
