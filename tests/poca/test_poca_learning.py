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
