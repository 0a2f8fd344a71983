"""SAC reaches ML-Agents' learning bars on SimpleEnvironment (reference: mlagents.md §6)."""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_sac_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

pytestmark = pytest.mark.learning


@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_sac_1d(action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    runner = Runner(dummy_sac_settings("1D"), env, seed=1337, stats_writers=[])
    result = await runner.run()
    assert result.updates["1D"] > 0
    assert env.mean_final_reward("1D") > 0.9


async def test_sac_2d_continuous() -> None:
    # ML-Agents' test_2d_sac: step size 0.8, buffer_init_steps 2000, 3000 steps, bar 0.8.
    env = SimpleEnvironment("2D", action_sizes=(2, 0), step_size=0.8, seed=1337)
    settings = dummy_sac_settings("2D", hyperparameters={"buffer_init_steps": 2000}, max_steps=3000)
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("2D") > 0.8
