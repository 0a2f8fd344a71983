"""Turns per-step env output into per-agent trajectories (ML-Agents' AgentProcessor).

Per step the env loop calls :meth:`AgentProcessor.add_steps` with what the env reported
(closing the experiences whose reward just arrived and cutting trajectories), then acts,
then calls :meth:`AgentProcessor.record_actions` so the next step can close them.

**Groups** (``group_id`` > 0, as Unity's multi-agent groups and the PettingZoo adapter report
them): each experience also keeps what the agent's groupmates that decided in the same step
observed and did, and the group reward that followed; a trajectory carries them as
:class:`~asynctrainer.runtime.trajectory.GroupData`, with its groupmates after the cut: those
still playing and those that ended in the same step (the critic of an agent that ended early
bootstraps from them, as ML-Agents' POCA does, and so does one whose group was interrupted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import BehaviorSpec, DecisionSteps, TerminalSteps
from asynctrainer.runtime.snapshot import ActOutput, flatten_obs
from asynctrainer.runtime.trajectory import GroupData, Trajectory

__all__ = ["AgentProcessor"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class _Mates:
    """The groupmates that decided beside an agent in one step: their observations and actions."""

    obs: F32
    continuous: F32
    discrete: npt.NDArray[np.int32]


@dataclass
class _Pending:
    """An action taken whose reward has not arrived yet."""

    obs: F32
    continuous: F32
    discrete: npt.NDArray[np.int32]
    log_prob: float
    entropy: float
    mask: F32 | None
    version: int
    memory: F32 | None = None
    group_id: int = 0
    mates: _Mates | None = None


@dataclass
class _AgentState:
    obs: list[F32] = field(default_factory=list)
    cont: list[F32] = field(default_factory=list)
    disc: list[npt.NDArray[np.int32]] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)
    ent: list[float] = field(default_factory=list)
    rew: list[float] = field(default_factory=list)
    masks: list[F32 | None] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    memories: list[F32 | None] = field(default_factory=list)
    group_rew: list[float] = field(default_factory=list)
    mates: list[_Mates | None] = field(default_factory=list)
    group_id: int = 0
    pending: _Pending | None = None
    #: The newest observation the env reported for this agent: a leaving agent bootstraps from it.
    last_obs: F32 | None = None
    episode_return: float = 0.0
    episode_length: int = 0

    def append(self, p: _Pending, reward: float, group_reward: float = 0.0) -> None:
        self.obs.append(p.obs)
        self.cont.append(p.continuous)
        self.disc.append(p.discrete)
        self.logp.append(p.log_prob)
        self.ent.append(p.entropy)
        self.rew.append(reward)
        self.masks.append(p.mask)
        self.versions.append(p.version)
        self.memories.append(p.memory)
        self.group_rew.append(group_reward)
        self.mates.append(p.mates)
        self.group_id = p.group_id
        self.episode_return += reward
        self.episode_length += 1

    def clear_steps(self) -> None:
        for lst in (
            self.obs,
            self.cont,
            self.disc,
            self.logp,
            self.ent,
            self.rew,
            self.masks,
            self.versions,
            self.memories,
            self.group_rew,
            self.mates,
        ):
            lst.clear()


class AgentProcessor:
    """Builds trajectories for the agents of one behavior in one env.

    :param time_horizon: cut a trajectory after this many steps (the learner bootstraps).
    :param worker_id: prefixes agent ids (``agent_<worker>-<id>``), as ML-Agents does.

    For a recurrent policy it also keeps each agent's memory between its decisions
    (:meth:`memories`, :meth:`remember`), from zeros at its first decision until its episode
    ends, so agents that come and go each keep their own.
    """

    def __init__(self, behavior_name: str, spec: BehaviorSpec, *, time_horizon: int, worker_id: int = 0) -> None:
        self.behavior_name = behavior_name
        self.spec = spec
        self.time_horizon = time_horizon
        self.worker_id = worker_id
        self._agents: dict[int, _AgentState] = {}
        self._memories: dict[int, F32] = {}
        self.episodes_completed = 0
        self.steps_recorded = 0

    def _group(self, state: _AgentState, next_mates: F32 | None, all_done: bool) -> GroupData | None:
        """The group beside ``state``'s steps (None when it is in no group), padded to its most mates."""
        if state.group_id <= 0:
            return None
        a = self.spec.action_spec
        width = self.spec.observation_size
        following = np.zeros((0, width), np.float32) if next_mates is None else next_mates
        most = max([len(following), *(0 if m is None else len(m.obs) for m in state.mates)])
        steps = len(state.mates)
        obs = np.full((steps, most, width), np.nan, np.float32)
        cont = np.zeros((steps, most, a.continuous_size), np.float32)
        disc = np.zeros((steps, most, a.discrete_size), np.int32)
        for t, m in enumerate(state.mates):
            if m is not None:
                obs[t, : len(m.obs)], cont[t, : len(m.obs)], disc[t, : len(m.obs)] = m.obs, m.continuous, m.discrete
        nxt = np.full((most, width), np.nan, np.float32)
        nxt[: len(following)] = following
        return GroupData(
            state.group_id,
            np.asarray(state.group_rew, np.float32),
            obs,
            cont,
            disc,
            nxt,
            all_done=all_done,
        )

    def _cut(
        self,
        agent_id: int,
        state: _AgentState,
        next_obs: F32,
        *,
        terminated: bool,
        interrupted: bool,
        next_mates: F32 | None = None,
        group_done: bool = True,
    ) -> Trajectory:
        masks = None
        if any(m is not None for m in state.masks):
            full = np.ones(self.spec.action_spec.mask_size, np.float32)
            masks = np.stack([full if m is None else m for m in state.masks])
        ended = terminated or interrupted
        group = self._group(state, next_mates, ended and group_done)
        traj = Trajectory(
            behavior_name=self.behavior_name,
            agent_id=f"agent_{self.worker_id}-{agent_id}",
            obs=np.stack(state.obs),
            next_obs=next_obs,
            actions_continuous=np.stack(state.cont),
            actions_discrete=np.stack(state.disc),
            log_probs=np.asarray(state.logp, np.float32),
            entropies=np.asarray(state.ent, np.float32),
            rewards=np.asarray(state.rew, np.float32),
            action_masks=masks,
            policy_versions=np.asarray(state.versions, np.int64),
            memories=None if state.memories[0] is None else np.stack(state.memories),  # type: ignore[arg-type]
            terminated=terminated,
            interrupted=interrupted,
            episode_return=state.episode_return if ended else None,
            episode_length=state.episode_length if ended else None,
            group=group,
        )
        self.steps_recorded += len(traj)
        state.clear_steps()
        return traj

    def add_steps(self, decision: DecisionSteps, terminal: TerminalSteps) -> list[Trajectory]:
        """Close the experiences whose reward arrived; return the trajectories that were cut.

        Terminal steps come first (their agents may also appear in ``decision`` with the first
        observation of a new episode), as in ML-Agents.
        """
        out: list[Trajectory] = []
        d_obs = flatten_obs(decision.obs, len(decision)) if len(decision) else None
        playing = self._playing(decision, d_obs, set(terminal.agent_id.tolist()))
        if len(terminal):
            t_obs = flatten_obs(terminal.obs, len(terminal))
            t_ids = terminal.agent_id.tolist()
            ending = _rows_by_group(terminal.group_id)
            for i, aid in enumerate(t_ids):
                self._memories.pop(aid, None)  # a new episode starts from zero memory
                state = self._agents.pop(aid, None)
                if state is None or state.pending is None:
                    continue
                state.append(state.pending, float(terminal.reward[i]), _group_reward(terminal.group_reward, i))
                interrupted = bool(terminal.interrupted[i])
                mates, living = None, None
                if state.group_id > 0:
                    # After its end: the groupmates playing on, and those ending with it (their last observations).
                    living = _others(playing.get(state.group_id), aid)
                    ended_with = t_obs[[j for j in ending.get(state.group_id, []) if j != i]]
                    mates = ended_with if living is None else np.concatenate([living, ended_with])
                out.append(
                    self._cut(
                        aid,
                        state,
                        t_obs[i],
                        terminated=not interrupted,
                        interrupted=interrupted,
                        next_mates=mates,
                        group_done=living is None or not len(living),
                    )
                )
                self.episodes_completed += 1
        if d_obs is not None:
            for i, aid in enumerate(decision.agent_id.tolist()):
                state = self._agents.get(aid)
                if state is None or state.pending is None:
                    continue
                state.append(state.pending, float(decision.reward[i]), _group_reward(decision.group_reward, i))
                state.pending = None
                state.last_obs = d_obs[i]
                if len(state.rew) >= self.time_horizon:
                    out.append(
                        self._cut(
                            aid,
                            state,
                            d_obs[i],
                            terminated=False,
                            interrupted=False,
                            next_mates=_others(playing.get(state.group_id), aid),
                            group_done=False,
                        )
                    )
        return out

    def _playing(self, decision: DecisionSteps, d_obs: F32 | None, ended: set[int]) -> dict[int, tuple[list[int], F32]]:
        """Per group, the agents that play on in their episode after this step and their observations:
        deciding, not ending now, and not starting a new episode (they acted before this step)."""
        if d_obs is None:
            return {}
        out: dict[int, tuple[list[int], F32]] = {}
        ids = decision.agent_id.tolist()
        for gid, members in _rows_by_group(decision.group_id).items():
            rows = [i for i in members if ids[i] not in ended and ids[i] in self._agents]
            out[gid] = ([ids[i] for i in rows], d_obs[rows])
        return out

    def memories(self, agent_ids: npt.NDArray[np.integer[Any]], size: int) -> F32:
        """Each agent's memory ``[n, size]``: what :meth:`remember` kept, zeros for an agent starting out."""
        out = np.zeros((len(agent_ids), size), np.float32)
        for i, aid in enumerate(agent_ids.tolist()):
            kept = self._memories.get(aid)
            if kept is not None and kept.shape == (size,):
                out[i] = kept
        return out

    def remember(self, agent_ids: npt.NDArray[np.integer[Any]], memories: F32) -> None:
        """Keep each agent's memory after its decision, for its next one."""
        for i, aid in enumerate(agent_ids.tolist()):
            self._memories[aid] = memories[i]

    def record_actions(
        self,
        decision: DecisionSteps,
        acted: ActOutput,
        version: int,
        masks: F32 | None = None,
        memories: F32 | None = None,
    ) -> None:
        """Remember what each deciding agent did (and the memory it decided with), until its reward arrives."""
        obs = flatten_obs(decision.obs, len(decision))
        groups = [0] * len(decision) if decision.group_id is None else [int(g) for g in decision.group_id.tolist()]
        members = _rows_by_group(decision.group_id)
        for i, aid in enumerate(decision.agent_id.tolist()):
            state = self._agents.get(aid)
            if state is None:
                state = self._agents[aid] = _AgentState()
            state.last_obs = obs[i]
            mates = None
            if groups[i] > 0:
                rows = [j for j in members[groups[i]] if j != i]
                mates = _Mates(obs[rows], acted.continuous_raw[rows], acted.discrete[rows])
            state.pending = _Pending(
                obs[i],
                acted.continuous_raw[i],
                acted.discrete[i],
                float(acted.log_prob[i]),
                float(acted.entropy[i]),
                None if masks is None else masks[i],
                version,
                None if memories is None else memories[i],
                groups[i],
                mates,
            )

    def end_agent(self, agent_id: int, next_obs: F32 | None = None) -> Trajectory | None:
        """End an agent that left mid-episode as interrupted (its last action has no reward: dropped).

        The trajectory bootstraps from ``next_obs`` when given, else from the newest observation
        the env reported for the agent (the one after its last rewarded step).
        """
        self._memories.pop(agent_id, None)
        state = self._agents.pop(agent_id, None)
        if state is None or not state.rew:
            return None
        last = next_obs if next_obs is not None else state.last_obs
        assert last is not None  # a rewarded step always came with an observation
        self.episodes_completed += 1
        return self._cut(agent_id, state, last, terminated=False, interrupted=True)

    @property
    def agent_ids(self) -> list[int]:
        return list(self._agents)


def _rows_by_group(group_id: npt.NDArray[np.int64] | None) -> dict[int, list[int]]:
    """The rows of each group (``group_id`` > 0) of a batch; empty without groups."""
    out: dict[int, list[int]] = {}
    if group_id is not None:
        for row, gid in enumerate(group_id.tolist()):
            if gid > 0:
                out.setdefault(int(gid), []).append(row)
    return out


def _group_reward(rewards: F32 | None, i: int) -> float:
    return 0.0 if rewards is None else float(rewards[i])


def _others(playing: tuple[list[int], F32] | None, agent_id: int) -> F32 | None:
    """The observations of the agents in ``playing`` other than ``agent_id``."""
    if playing is None:
        return None
    ids, obs = playing
    return obs[[i for i, other in enumerate(ids) if other != agent_id]]
