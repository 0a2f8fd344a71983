"""PPO and SAC reach ML-Agents' bar (0.9) from variable-length observations (its ``var_len_obs`` tests).

SimpleEnvironment with one or two 10x5 variable-length observations filled with the goal (a
random number of entities present each step, the rest zero), with and without a vector one,
the dummy configs with learning rate 3e-4 (SAC: batch 16).
"""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_ppo_settings, dummy_sac_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

pytestmark = pytest.mark.learning

CASES = pytest.mark.parametrize(
    ("num_vector", "num_var_len", "action_sizes"),
    [(1, 1, (0, 1)), (0, 2, (1, 0))],
    ids=["vector+1-discrete", "2-continuous"],
)


@CASES
async def test_var_len_obs_ppo(num_vector: int, num_var_len: int, action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, num_vector=num_vector, num_var_len=num_var_len, seed=1337)
    runner = Runner(dummy_ppo_settings("1D", hyperparameters={"learning_rate": 3e-4}), env, seed=1337, stats_writers=[])
    await runner.run()
    assert env.mean_final_reward("1D") > 0.9
    assert runner.slots["1D"].latest().attention is not None


@pytest.mark.parametrize(
    ("num_var_len", "action_sizes"), [(1, (0, 1)), (2, (1, 0))], ids=["1-discrete", "2-continuous"]
)
async def test_var_len_obs_sac(num_var_len: int, action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, num_vector=0, num_var_len=num_var_len, seed=1337)
    settings = dummy_sac_settings("1D", hyperparameters={"batch_size": 16, "learning_rate": 3e-4})
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9
