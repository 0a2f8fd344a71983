"""PPO and SAC reach ML-Agents' bar (0.9) conditioned on goal signals (its ``var_len_obs_and_goal`` tests).

SimpleEnvironment with observation 0 a goal signal (``goal_indices=(0,)``): only it shows the
goal, the other observations show the agent's position, so the policy must read the goal
through its hypernetwork. 1×32 units with ``goal_conditioning_type: hyper``, learning rate 3e-4
(SAC: batch 16), as ML-Agents' test.
"""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_ppo_settings, dummy_sac_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

pytestmark = pytest.mark.learning

NETWORK = {"hidden_units": 32, "num_layers": 1, "goal_conditioning_type": "hyper"}


@pytest.mark.parametrize(
    ("observations", "action_sizes"),
    [({"num_vector": 1, "num_var_len": 1}, (0, 1)), ({"num_vector": 2}, (1, 0))],
    ids=["vector-goal+variable-length-discrete", "vector-goal+vector-continuous"],
)
async def test_goal_conditioned_ppo(observations: dict[str, int], action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, goal_indices=(0,), seed=1337, **observations)
    settings = dummy_ppo_settings("1D", hyperparameters={"learning_rate": 3e-4}, network_settings=NETWORK)
    runner = Runner(settings, env, seed=1337, stats_writers=[])
    await runner.run()
    assert env.mean_final_reward("1D") > 0.9
    assert runner.slots["1D"].latest().hyper is not None


async def test_goal_conditioned_sac() -> None:
    env = SimpleEnvironment("1D", action_sizes=(1, 0), num_vector=2, goal_indices=(0,), seed=1337)
    hyper = {"batch_size": 16, "learning_rate": 3e-4}
    await Runner(dummy_sac_settings("1D", hyperparameters=hyper, network_settings=NETWORK), env, seed=1337).run()
    assert env.mean_final_reward("1D") > 0.9
