"""POCA reaches ML-Agents' bar on its MultiAgentEnvironment (test_simple_poca)."""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_ppo_settings
from asynctrainer.testing.simple_env import MultiAgentEnvironment

pytestmark = pytest.mark.learning


@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_simple_poca(action_sizes: tuple[int, int]) -> None:
    env = MultiAgentEnvironment("1D", action_sizes=action_sizes, seed=1337)
    runner = Runner(dummy_ppo_settings("1D", trainer_type="poca"), env, seed=1337, stats_writers=[])
    await runner.run()
    assert env.mean_final_reward("1D") > 0.9


@pytest.mark.parametrize("num_visual", [1, 2])
async def test_visual_poca(num_visual: int) -> None:
    # ML-Agents' visual_poca: a vector and 1 or 2 cameras per agent, lr 3e-4; the critic encodes each
    # groupmate's cameras with the same visual encoder.
    env = MultiAgentEnvironment("1D", action_sizes=(0, 1), num_visual=num_visual, seed=1337)
    settings = dummy_ppo_settings("1D", trainer_type="poca", hyperparameters={"learning_rate": 3e-4})
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9
