"""Groups (``group_id`` > 0) through the AgentProcessor: what each trajectory carries of its groupmates,
on ML-Agents' MultiAgentEnvironment and on hand-made steps."""

from __future__ import annotations

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionBatch, ActionSpec, BehaviorSpec, DecisionSteps, ObservationSpec, TerminalSteps
from asynctrainer.runtime.agent_processor import AgentProcessor
from asynctrainer.runtime.snapshot import ActOutput
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.scale.codec import trajectory_from_dict, trajectory_to_dict
from asynctrainer.testing.simple_env import SUCCESS_REWARD, TIME_PENALTY, MultiAgentEnvironment

SPEC = BehaviorSpec((ObservationSpec((2,), "obs"),), ActionSpec(1, (3,)))


def decided(n: int, first_action: float = 0.0) -> ActOutput:
    """Actions for ``n`` agents: agent row ``i`` takes continuous ``first_action + i`` and discrete ``i % 3``."""
    cont = (first_action + np.arange(n, dtype=np.float32)).reshape(n, 1)
    return ActOutput(cont, cont, (np.arange(n) % 3).astype(np.int32).reshape(n, 1), np.zeros(n), np.zeros(n))


def steps(
    ids: list[int], groups: list[int], obs_value: float, rewards: list[float], group_rewards: list[float]
) -> DecisionSteps:
    obs = [np.array([[obs_value, float(i)] for i in ids], np.float32).reshape(len(ids), 2)]
    return DecisionSteps(
        obs,
        np.array(rewards, np.float32),
        np.array(ids, np.int64),
        None,
        np.array(groups, np.int64),
        np.array(group_rewards, np.float32),
    )


def test_a_trajectory_carries_its_groupmates_actions_and_the_group_reward() -> None:
    proc = AgentProcessor("B", SPEC, time_horizon=2)
    first = steps([0, 1, 2, 5], [1, 1, 1, 0], 0.0, [0, 0, 0, 0], [0, 0, 0, 0])  # agent 5: no group
    proc.record_actions(first, decided(4), 0)
    second = steps([0, 1, 2, 5], [1, 1, 1, 0], 1.0, [0.5, 0.5, 0.5, 0.5], [2.0, 2.0, 2.0, 0.0])
    assert proc.add_steps(second, TerminalSteps.empty(SPEC)) == []
    proc.record_actions(second, decided(4, 10.0), 0)
    third = steps([0, 1, 2, 5], [1, 1, 1, 0], 2.0, [0, 0, 0, 0], [3.0, 3.0, 3.0, 0.0])
    trajs = {t.agent_id: t for t in proc.add_steps(third, TerminalSteps.empty(SPEC))}  # time_horizon cuts
    assert trajs["agent_0-5"].group is None
    group = trajs["agent_0-1"].group
    assert group is not None and group.group_id == 1 and not group.all_done
    assert group.rewards.tolist() == [2.0, 3.0]
    assert trajs["agent_0-1"].rewards.tolist() == [0.5, 0.0]  # the individual reward stays apart
    # Agent 1's mates are agents 0 and 2, in the order they decided, with what they did that step.
    assert group.mates_obs[:, :, 1].tolist() == [[0.0, 2.0], [0.0, 2.0]]
    assert group.mates_obs[:, :, 0].tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert group.mates_continuous[:, :, 0].tolist() == [[0.0, 2.0], [10.0, 12.0]]
    assert group.mates_discrete[:, :, 0].tolist() == [[0, 2], [0, 2]]
    assert group.next_mates_obs.tolist() == [[2.0, 0.0], [2.0, 2.0]]


def test_an_agent_that_ends_early_is_not_done_for_its_group_and_missing_mates_are_nan() -> None:
    proc = AgentProcessor("B", SPEC, time_horizon=100)
    first = steps([0, 1], [1, 1], 0.0, [0, 0], [0, 0])
    proc.record_actions(first, decided(2), 0)
    # Agent 0 ends; agent 1 plays on.
    ended = TerminalSteps([np.array([[9.0, 0.0]], np.float32)], np.array([1.0], np.float32), np.array([0]),
                          np.array([False]), np.array([1]), np.array([0.0], np.float32))  # fmt: skip
    going_on = steps([1], [1], 1.0, [0.0], [0.0])
    (early,) = proc.add_steps(going_on, ended)
    assert early.agent_id == "agent_0-0" and early.terminated
    assert early.group is not None and not early.group.all_done
    assert early.group.next_mates_obs.tolist() == [[1.0, 1.0]]  # the critic bootstraps from the one still playing
    proc.record_actions(going_on, decided(1), 0)
    # Agent 1 ends last, with the group reward.
    last = TerminalSteps([np.array([[9.0, 1.0]], np.float32)], np.array([0.0], np.float32), np.array([1]),
                         np.array([False]), np.array([1]), np.array([1.5], np.float32))  # fmt: skip
    (final,) = proc.add_steps(DecisionSteps.empty(SPEC), last)
    assert final.group is not None and final.group.all_done
    assert final.group.rewards.tolist() == [0.0, 1.5]
    assert final.group.max_mates == 1
    assert final.group.mates_obs[0, 0].tolist() == [0.0, 0.0]  # agent 0 beside it at the first step
    assert np.isnan(final.group.mates_obs[1]).all()  # alone at the second: a NaN row
    assert np.isnan(final.group.next_mates_obs).all()
    # The group travels to Ray workers and back unchanged.
    back = trajectory_from_dict(trajectory_to_dict(final))
    assert back.group is not None and back.group.all_done
    np.testing.assert_array_equal(back.group.mates_obs, final.group.mates_obs)
    np.testing.assert_array_equal(back.group.rewards, final.group.rewards)
    assert trajectory_from_dict(trajectory_to_dict(early)).group is not None


async def test_multi_agent_environment_rewards_the_last_finisher_with_the_group_reward() -> None:
    env = MultiAgentEnvironment("G", action_sizes=(0, 1), num_agents=2, seed=3)
    proc = AgentProcessor("G", env.behavior_specs["G"], time_horizon=1000)
    rng = np.random.default_rng(0)
    batch = (await env.reset())["G"]
    assert batch.decision.group_id is not None and batch.decision.group_id.tolist() == [1, 1]
    trajs: list[Trajectory] = []
    group_rewards: list[float] = []
    for _ in range(3000):
        trajs += proc.add_steps(batch.decision, batch.terminal)
        if batch.terminal.group_reward is not None:
            group_rewards += batch.terminal.group_reward.tolist()
        n = len(batch.decision)
        act = rng.integers(0, 2, size=(n, 1)).astype(np.int32)
        out = ActOutput(np.zeros((n, 0), np.float32), np.zeros((n, 0), np.float32), act, np.zeros(n), np.zeros(n))
        proc.record_actions(batch.decision, out, 0)

        batch = (await env.step({"G": ActionBatch(out.continuous, act, batch.decision.agent_id)}))["G"]
    early = [t for t in trajs if t.terminated and t.group is not None and not t.group.all_done]
    last = [t for t in trajs if t.terminated and t.group is not None and t.group.all_done]
    assert early and last
    for t in early:  # the early finisher: at most −TIME_PENALTY, no group reward; its mate still playing
        assert t.rewards[-1] <= -TIME_PENALTY + 1e-6 and t.group is not None and t.group.rewards[-1] == 0.0
        assert not np.isnan(t.group.next_mates_obs).any()
    rewarded = [t for t in last if t.group is not None and t.group.rewards[-1] != 0.0]
    assert rewarded
    for t in rewarded:  # the last: 0 for itself and ±SUCCESS_REWARD · mean(position · goal) for the group
        assert t.rewards[-1] == 0.0 and t.group is not None
        assert abs(t.group.rewards[-1]) == pytest.approx(SUCCESS_REWARD, abs=1e-5)
    for t in last:  # one finishing together with the last: as an early finisher, yet the group is done
        if t not in rewarded:
            assert t.rewards[-1] <= -TIME_PENALTY + 1e-6
    assert env.final_rewards["G"]
    assert {round(abs(r), 4) for r in env.final_rewards["G"]} == {round(SUCCESS_REWARD, 4)}
    assert sum(1 for r in group_rewards if r != 0.0) == len(rewarded)


async def test_multi_agent_environment_needs_actions_for_exactly_its_players() -> None:

    from asynctrainer.errors import SpecError

    env = MultiAgentEnvironment("G", action_sizes=(0, 1))
    await env.reset()
    one = ActionBatch(np.zeros((1, 0), np.float32), np.ones((1, 1), np.int32), np.array([0]))
    with pytest.raises(SpecError, match=r"agents \[0 1\]"):
        await env.step({"G": one})


def test_a_group_interrupted_together_bootstraps_from_each_others_last_observations() -> None:
    proc = AgentProcessor("B", SPEC, time_horizon=100)
    first = steps([0, 1, 2], [1, 1, 1], 0.0, [0, 0, 0], [0, 0, 0])
    proc.record_actions(first, decided(3), 0)
    obs = np.array([[5.0, 0.0], [5.0, 1.0], [5.0, 2.0]], np.float32)
    cut_off = TerminalSteps([obs], np.zeros(3, np.float32), np.array([0, 1, 2]), np.ones(3, bool),
                            np.array([1, 1, 1]), np.zeros(3, np.float32))  # fmt: skip
    trajs = {t.agent_id: t for t in proc.add_steps(DecisionSteps.empty(SPEC), cut_off)}
    middle = trajs["agent_0-1"]
    assert middle.interrupted and middle.group is not None and middle.group.all_done
    assert middle.group.next_mates_obs.tolist() == [[5.0, 0.0], [5.0, 2.0]]  # the others' last observations
