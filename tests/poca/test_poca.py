"""POCA's parts: the counterfactual advantages, the group critic, the trainer's update on group trajectories."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.poca.advantages import counterfactual_advantages
from asynctrainer.poca.networks import flat_actions
from asynctrainer.runtime.trajectory import GroupData, Trajectory
from asynctrainer.testing.fakes import random_trajectory
from asynctrainer.testing.settings import dummy_ppo_settings


def test_returns_are_lambda_returns_of_the_value_and_advantages_subtract_the_baseline() -> None:
    gamma, lam = 0.9, 0.5
    rewards = np.array([1.0, 0.0, 2.0, 0.5, -1.0], np.float32)
    values = np.array([0.5, 0.4, 0.3, 0.2, 0.1], np.float32)
    baselines = np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32)
    bootstrap = np.array([0.7, 0.9], np.float32)
    lengths = np.array([3, 2])
    done = np.array([False, True])
    adv, ret = counterfactual_advantages(rewards, values, baselines, bootstrap, lengths, done, gamma, lam)
    # G_{T-1} = r + γ V_next (0 when done); G_t = r_t + γ [(1 − λ) V_{t+1} + λ G_{t+1}], per trajectory.
    g2 = 2.0 + gamma * 0.7
    g1 = 0.0 + gamma * ((1 - lam) * 0.3 + lam * g2)
    g0 = 1.0 + gamma * ((1 - lam) * 0.4 + lam * g1)
    g4 = -1.0
    g3 = 0.5 + gamma * ((1 - lam) * 0.1 + lam * g4)
    np.testing.assert_allclose(ret, [g0, g1, g2, g3, g4], rtol=1e-5)
    np.testing.assert_allclose(adv, ret - baselines, rtol=1e-5)
    with pytest.raises(ValueError, match="baselines"):
        counterfactual_advantages(rewards, values, baselines[:2], bootstrap, lengths, done, gamma, lam)


def test_flat_actions_keep_continuous_and_one_hot_each_branch() -> None:
    cont = np.array([[[0.5], [-2.0]]], np.float32)
    disc = np.array([[[1, 0], [2, 1]]], np.int32)
    flat = flat_actions(cont, disc, ActionSpec(1, (3, 2)))
    assert flat.shape == (1, 2, 6)
    assert flat[0].tolist() == [[0.5, 0, 1, 0, 1, 0], [-2.0, 0, 0, 1, 0, 1]]


SPEC = BehaviorSpec((ObservationSpec((3,), "obs"),), ActionSpec(1, (2,)))


def group_trajectory(agent: str, steps: int, mates: int, *, all_done: bool, seed: int) -> Trajectory:
    """A finished episode of ``steps`` beside ``mates`` groupmates (one gone at the last step), group reward 0.5."""
    rng = np.random.default_rng(seed)
    mates_obs = rng.normal(size=(steps, mates, 3)).astype(np.float32)
    mates_obs[-1, -1] = np.nan
    group = GroupData(
        1,
        np.full(steps, 0.5, np.float32),
        mates_obs,
        rng.normal(size=(steps, mates, 1)).astype(np.float32),
        rng.integers(0, 2, size=(steps, mates, 1)).astype(np.int32),
        np.full((mates, 3), np.nan, np.float32) if all_done else rng.normal(size=(mates, 3)).astype(np.float32),
        all_done,
    )
    return random_trajectory(steps, rng=rng, behavior_name="G", agent_id=agent, group=group)


def test_the_trainer_updates_on_groups_of_different_sizes_and_reports_the_baseline() -> None:
    from asynctrainer.poca.trainer import POCATrainer

    settings = dummy_ppo_settings("G", trainer_type="poca", hyperparameters={"buffer_size": 16, "batch_size": 8})
    trainer = POCATrainer("G", settings.behaviors["G"], seed=3)
    trainer.create_policy("G", SPEC)
    assert trainer.critic is not None and trainer.net is not None and not trainer.net.has_critic
    names = set(trainer._named_variables())
    assert "poca_max_agents" in names and "poca_value_heads/kernel" in names and "value_head/kernel" not in names
    trajs = [
        group_trajectory("a", 6, 2, all_done=False, seed=1),  # ended before its group: bootstraps from it
        group_trajectory("b", 5, 1, all_done=True, seed=2),
        group_trajectory("c", 5, 3, all_done=True, seed=3),
    ]
    before = {k: v.numpy().copy() for k, v in trainer._named_variables().items()}
    for t in trajs:
        trainer._store_trajectory(t)
    stats = trainer._update_policy()
    assert np.isfinite(stats["Losses/Baseline Loss"]) and stats["Losses/Baseline Loss"] > 0
    assert "Policy/Extrinsic Baseline Estimate" in stats and "Policy/Extrinsic Value Estimate" in stats
    assert float(trainer.critic.max_agents.numpy()) == 4.0  # agent c and its three groupmates
    after = trainer._named_variables()
    for name in ("poca_obs_entity/kernel", "poca_obs_action_entity/kernel", "actor_0/kernel"):
        assert not np.allclose(before[name], after[name].numpy()), name
    # The group's reward is part of the extrinsic reward: with it the update's returns differ.
    rewards, _ = trainer._signal_rewards(trajs, np.concatenate([t.obs for t in trajs]))
    np.testing.assert_allclose(rewards[0][:6], trajs[0].rewards + 0.5, rtol=1e-6)


def test_an_agent_ended_before_its_group_bootstraps_and_one_ended_with_it_does_not() -> None:
    from asynctrainer.poca.trainer import POCATrainer

    settings = dummy_ppo_settings("G", trainer_type="poca")
    trainer = POCATrainer("G", settings.behaviors["G"], seed=3)
    trainer.create_policy("G", SPEC)
    early = group_trajectory("a", 4, 1, all_done=False, seed=5)
    late = group_trajectory("b", 4, 1, all_done=True, seed=5)  # same steps, but its group was done
    obs = np.concatenate([early.obs, late.obs])
    values, bootstrap, _ = trainer._values([early, late], obs)
    rewards = [np.concatenate([early.rewards, late.rewards])]
    _, returns = trainer._advantages([early, late], values, bootstrap, rewards)
    # The last step's return: r + γ V(next) for the early one, r alone for the one whose group ended.
    gamma = 0.99
    assert returns[3, 0] == pytest.approx(early.rewards[-1] + gamma * bootstrap[0, 0], rel=1e-5)
    assert returns[7, 0] == pytest.approx(late.rewards[-1], rel=1e-5)


async def test_a_poca_run_saves_its_critic_exports_the_actor_and_resumes_exactly(tmp_path: Path) -> None:
    from asynctrainer import Runner
    from asynctrainer.checkpoints.manager import find_checkpoint, load_checkpoint_state
    from asynctrainer.testing.simple_env import MultiAgentEnvironment

    settings = dummy_ppo_settings(
        "1D",
        trainer_type="poca",
        max_steps=300,
        checkpoint_interval=100,
        network_settings={"hidden_units": 32, "num_layers": 1, "normalize": True},
    )

    def runner(**kwargs: Any) -> Runner:
        env = MultiAgentEnvironment("1D", action_sizes=(1, 1), seed=5)
        return Runner(settings, env, results_dir=tmp_path, run_id="run", seed=5, stats_writers=[], **kwargs)

    first = runner()
    result = await first.run()
    saved = load_checkpoint_state(find_checkpoint(tmp_path / "run" / "1D", "1D"))
    assert float(saved["algo/weights/poca_max_agents"]) == 2.0
    assert any(k.startswith("algo/weights/poca_attention_query") for k in saved)
    assert (tmp_path / "run" / "1D.onnx").exists()  # the actor, exported as PPO's is
    second = runner(resume=True)
    again = await second.run()
    assert again.steps == result.steps
    restored = second.trainers["1D"].get_state()
    for key, value in saved.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)


def test_the_group_cumulative_reward_sums_an_episode_and_leaves_out_agents_that_ended_early() -> None:
    from asynctrainer.poca.trainer import POCATrainer
    from asynctrainer.runtime.stats import StatsReporter

    settings = dummy_ppo_settings("G", trainer_type="poca")
    trainer = POCATrainer("G", settings.behaviors["G"], seed=3, stats_reporter=StatsReporter("G"))
    trainer.create_policy("G", SPEC)
    first = group_trajectory("b", 4, 1, all_done=True, seed=1)
    cut = dataclasses.replace(first, terminated=False, episode_return=None, episode_length=None)
    trainer._process_trajectory(cut)  # 4 steps of 0.5, the episode goes on
    trainer._process_trajectory(first)  # and ends with its group: 8 steps of 0.5 in all
    trainer._process_trajectory(group_trajectory("a", 4, 1, all_done=False, seed=2))  # ended early: left out
    trainer.stats_reporter.write_stats(1)
    (record,) = trainer.stats_reporter.history
    summary = record.values["Environment/Group Cumulative Reward"]
    assert summary.mean == pytest.approx(4.0) and summary.count == 1


def test_ppo_and_sac_take_the_group_reward_as_extrinsic_and_say_once_that_poca_is_for_groups(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from asynctrainer.runtime.stats import StatsReporter
    from asynctrainer.sac.replay_buffer import transitions_from_trajectory
    from asynctrainer.testing.fakes import FakeTrainer

    traj = group_trajectory("a", 4, 1, all_done=True, seed=1)
    np.testing.assert_allclose(traj.extrinsic_rewards, traj.rewards + 0.5)
    sac_rows = transitions_from_trajectory(traj, 0, 0, 0)
    np.testing.assert_allclose(sac_rows.rewards, traj.rewards + 0.5)
    settings = dummy_ppo_settings("G").behaviors["G"]
    trainer = FakeTrainer("G", settings, stats_reporter=StatsReporter("G"))
    with caplog.at_level("WARNING", logger="asynctrainer"):
        trainer._process_trajectory(traj)
        trainer._process_trajectory(traj)
    assert caplog.text.count("received a group reward, but FakeTrainer is not a multi-agent trainer") == 1
