"""Recurrent PPO reaches ML-Agents' test_recurrent_ppo bar on MemoryEnvironment; a feed-forward policy does not."""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_ppo_settings
from asynctrainer.testing.simple_env import MemoryEnvironment

pytestmark = pytest.mark.learning

#: ML-Agents' test_recurrent_ppo: memory_size 16, lr 1e-3, batch 64, buffer 128, 6000 steps.
HYPER = {"learning_rate": 1e-3, "batch_size": 64, "buffer_size": 128}


@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_recurrent_ppo(action_sizes: tuple[int, int]) -> None:
    env = MemoryEnvironment("1D", action_sizes=action_sizes, seed=1337)
    network = {"hidden_units": 32, "num_layers": 1, "memory": {"memory_size": 16}}
    settings = dummy_ppo_settings("1D", hyperparameters=HYPER, network_settings=network, max_steps=6000)
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9


async def test_without_memory_the_memory_environment_is_not_solved() -> None:
    env = MemoryEnvironment("1D", action_sizes=(0, 1), seed=1337)
    await Runner(
        dummy_ppo_settings("1D", hyperparameters=HYPER, max_steps=6000), env, seed=1337, stats_writers=[]
    ).run()
    assert env.mean_final_reward("1D") < 0.9
