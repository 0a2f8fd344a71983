"""PPO reaches ML-Agents' learning bars on SimpleEnvironment."""

from __future__ import annotations

import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_ppo_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

pytestmark = pytest.mark.learning


@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_ppo_1d(action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    await Runner(dummy_ppo_settings("1D"), env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9


@pytest.mark.parametrize("action_sizes", [(0, 2), (2, 0)], ids=["discrete", "continuous"])
async def test_ppo_2d(action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("2D", action_sizes=action_sizes, step_size=0.8, seed=1337)
    settings = dummy_ppo_settings("2D", hyperparameters={"batch_size": 64, "buffer_size": 640}, max_steps=10000)
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("2D") > 0.9


async def run_strict(seed: int) -> tuple[list[tuple[int, float]], dict[str, np.ndarray]]:
    env = SimpleEnvironment("1D", action_sizes=(0, 1), seed=seed, num_agents=3)
    runner = Runner(
        dummy_ppo_settings("1D", strict_on_policy=True, max_steps=1200, summary_freq=200),
        env,
        seed=seed,
        stats_writers=[],
    )
    await runner.run()
    history = runner.trainers["1D"].stats_reporter.history
    summaries = [(r.step, r.values["Environment/Cumulative Reward"].mean) for r in history]
    return summaries, runner.slots["1D"].latest().weights()


async def test_strict_on_policy_with_a_seed_repeats_exactly() -> None:
    a_summaries, a_weights = await run_strict(7)
    b_summaries, b_weights = await run_strict(7)
    assert len(a_summaries) >= 5
    assert a_summaries == b_summaries
    assert a_weights.keys() == b_weights.keys()
    for key in a_weights:
        np.testing.assert_array_equal(a_weights[key], b_weights[key])
    c_summaries, _ = await run_strict(8)
    assert c_summaries != a_summaries, "a different seed must give a different run"


@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_ppo_1d_shared_critic(action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    settings = dummy_ppo_settings("1D", hyperparameters={"shared_critic": True})
    runner = Runner(settings, env, seed=1337, stats_writers=[])
    await runner.run()
    net = runner.trainers["1D"].net
    assert net is not None and net.critic_body is net.actor_body
    assert env.mean_final_reward("1D") > 0.9
