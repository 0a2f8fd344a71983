"""Turns per-step env output into per-agent trajectories (ML-Agents' AgentProcessor).

Per step the env loop calls :meth:`AgentProcessor.add_steps` with what the env reported
(closing the experiences whose reward just arrived and cutting trajectories), then acts,
then calls :meth:`AgentProcessor.record_actions` so the next step can close them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import BehaviorSpec, DecisionSteps, TerminalSteps
from asynctrainer.runtime.snapshot import ActOutput, flatten_obs
from asynctrainer.runtime.trajectory import Trajectory

__all__ = ["AgentProcessor"]

F32 = npt.NDArray[np.float32]


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
    pending: _Pending | None = None
    #: The newest observation the env reported for this agent: a leaving agent bootstraps from it.
    last_obs: F32 | None = None
    episode_return: float = 0.0
    episode_length: int = 0

    def append(self, p: _Pending, reward: float) -> None:
        self.obs.append(p.obs)
        self.cont.append(p.continuous)
        self.disc.append(p.discrete)
        self.logp.append(p.log_prob)
        self.ent.append(p.entropy)
        self.rew.append(reward)
        self.masks.append(p.mask)
        self.versions.append(p.version)
        self.memories.append(p.memory)
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

    def _cut(
        self, agent_id: int, state: _AgentState, next_obs: F32, *, terminated: bool, interrupted: bool
    ) -> Trajectory:
        masks = None
        if any(m is not None for m in state.masks):
            full = np.ones(self.spec.action_spec.mask_size, np.float32)
            masks = np.stack([full if m is None else m for m in state.masks])
        ended = terminated or interrupted
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
        if len(terminal):
            t_obs = flatten_obs(terminal.obs, len(terminal))
            for i, aid in enumerate(terminal.agent_id.tolist()):
                self._memories.pop(aid, None)  # a new episode starts from zero memory
                state = self._agents.pop(aid, None)
                if state is None or state.pending is None:
                    continue
                state.append(state.pending, float(terminal.reward[i]))
                interrupted = bool(terminal.interrupted[i])
                out.append(self._cut(aid, state, t_obs[i], terminated=not interrupted, interrupted=interrupted))
                self.episodes_completed += 1
        if len(decision):
            d_obs = flatten_obs(decision.obs, len(decision))
            for i, aid in enumerate(decision.agent_id.tolist()):
                state = self._agents.get(aid)
                if state is None or state.pending is None:
                    continue
                state.append(state.pending, float(decision.reward[i]))
                state.pending = None
                state.last_obs = d_obs[i]
                if len(state.rew) >= self.time_horizon:
                    out.append(self._cut(aid, state, d_obs[i], terminated=False, interrupted=False))
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
        for i, aid in enumerate(decision.agent_id.tolist()):
            state = self._agents.get(aid)
            if state is None:
                state = self._agents[aid] = _AgentState()
            state.last_obs = obs[i]
            state.pending = _Pending(
                obs[i],
                acted.continuous_raw[i],
                acted.discrete[i],
                float(acted.log_prob[i]),
                float(acted.entropy[i]),
                None if masks is None else masks[i],
                version,
                None if memories is None else memories[i],
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
