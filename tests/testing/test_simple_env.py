from __future__ import annotations

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionBatch
from asynctrainer.testing.simple_env import SimpleEnvironment


async def test_optimal_1d_episode_returns_1_02_and_is_measured_by_mean_final_reward() -> None:
    env = SimpleEnvironment("1D", action_sizes=(0, 1), seed=0)
    with pytest.raises(ValueError, match="only 0 episodes"):
        env.mean_final_reward("1D")
    steps = await env.reset()
    while len(env.final_rewards["1D"]) < 5:
        goal = steps["1D"].decision.obs[0][:, 0]
        action = (goal > 0).astype(np.int32)[:, None]
        steps = await env.step({"1D": ActionBatch(np.zeros((1, 0), np.float32), action, np.arange(1))})
    assert env.mean_final_reward("1D") == pytest.approx(1.02)
