from __future__ import annotations

import numpy as np

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, DecisionSteps, ObservationSpec, TerminalSteps
from asynctrainer.runtime.agent_processor import AgentProcessor
from asynctrainer.runtime.snapshot import ActOutput

SPEC = BehaviorSpec((ObservationSpec((1,)),), ActionSpec.create_discrete((2,)))


def dec(ids: list[int], obs: list[float], rew: list[float]) -> DecisionSteps:
    return DecisionSteps([np.array(obs, np.float32)[:, None]], np.array(rew, np.float32), np.array(ids, np.int64))


def term(ids: list[int], obs: list[float], rew: list[float], interrupted: list[bool]) -> TerminalSteps:
    return TerminalSteps(
        [np.array(obs, np.float32)[:, None]], np.array(rew, np.float32), np.array(ids, np.int64), np.array(interrupted)
    )


def acted(n: int, logp: float = -0.5) -> ActOutput:
    return ActOutput(
        np.zeros((n, 0), np.float32),
        np.zeros((n, 0), np.float32),
        np.ones((n, 1), np.int32),
        np.full(n, logp, np.float32),
        np.full(n, 0.6, np.float32),
    )


def run_steps(p: AgentProcessor, steps: list[tuple[DecisionSteps, TerminalSteps]], version: int = 0) -> list:
    out = []
    for d, t in steps:
        out += p.add_steps(d, t)
        if len(d):
            p.record_actions(d, acted(len(d)), version)
    return out


def test_terminal_step_ends_a_trajectory_that_bootstraps_nothing() -> None:
    p = AgentProcessor("b", SPEC, time_horizon=100)
    empty = TerminalSteps.empty(SPEC)
    trajs = run_steps(
        p,
        [
            (dec([7], [0.0], [0.0]), empty),
            (dec([7], [1.0], [0.5]), empty),
            (dec([7], [10.0], [0.0]), term([7], [2.0], [1.0], [False])),
        ],
    )
    assert len(trajs) == 1
    t = trajs[0]
    assert t.terminated and not t.interrupted
    assert t.rewards.tolist() == [0.5, 1.0]
    assert t.obs[:, 0].tolist() == [0.0, 1.0]
    assert t.next_obs.tolist() == [2.0], "next_obs is the terminal observation, not the new episode's first"
    assert t.episode_return == 1.5 and t.episode_length == 2
    # The new episode's first observation (10.0) started a fresh trajectory.
    more = run_steps(p, [(dec([7], [11.0], [0.25]), term([7], [12.0], [0.0], [True]))])
    assert more[0].obs[:, 0].tolist() == [10.0] and more[0].interrupted and not more[0].terminated


def test_time_horizon_cut_is_not_done_and_keeps_the_next_observation() -> None:
    p = AgentProcessor("b", SPEC, time_horizon=3)
    empty = TerminalSteps.empty(SPEC)
    trajs = run_steps(p, [(dec([1], [float(i)], [1.0]), empty) for i in range(8)], version=4)
    assert [len(t) for t in trajs] == [3, 3]
    assert not trajs[0].done_reached and trajs[0].episode_return is None
    assert trajs[0].next_obs.tolist() == [3.0]
    assert trajs[1].obs[:, 0].tolist() == [3.0, 4.0, 5.0]
    assert trajs[0].policy_versions.tolist() == [4, 4, 4]
    assert trajs[0].log_probs.tolist() == [-0.5, -0.5, -0.5]


def test_agents_are_tracked_separately_and_leaving_interrupts() -> None:
    p = AgentProcessor("b", SPEC, time_horizon=100, worker_id=3)
    empty = TerminalSteps.empty(SPEC)
    run_steps(p, [(dec([1, 2], [0.0, 5.0], [0, 0]), empty), (dec([1, 2], [1.0, 6.0], [1.0, 2.0]), empty)])
    t = p.end_agent(2)
    assert t is not None and t.interrupted and t.agent_id == "agent_3-2"
    assert t.rewards.tolist() == [2.0] and t.next_obs.tolist() == [6.0]
    assert p.agent_ids == [1]


def test_leaving_before_acting_bootstraps_from_the_last_observation() -> None:
    # The agent's reward for its second step arrived with observation 1.0; it left before acting on it.
    p = AgentProcessor("b", SPEC, time_horizon=100)
    empty = TerminalSteps.empty(SPEC)
    run_steps(p, [(dec([4], [0.0], [0.0]), empty)])
    assert p.add_steps(dec([4], [1.0], [0.5]), empty) == []
    t = p.end_agent(4)
    assert t is not None and t.interrupted and not t.terminated
    assert t.obs[:, 0].tolist() == [0.0] and t.rewards.tolist() == [0.5]
    assert t.next_obs.tolist() == [1.0], "bootstrap from the observation after the last step"


def test_leaving_after_a_time_horizon_cut_ends_nothing_more() -> None:
    p = AgentProcessor("b", SPEC, time_horizon=2)
    empty = TerminalSteps.empty(SPEC)
    cut = run_steps(p, [(dec([4], [float(i)], [1.0]), empty) for i in range(3)])
    assert len(cut) == 1 and cut[0].next_obs.tolist() == [2.0]
    assert p.end_agent(4) is None, "the action on 2.0 has no reward yet: nothing to send"
