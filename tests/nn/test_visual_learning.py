"""PPO and SAC reach ML-Agents' bars from visual observations alone (its ``test_visual_ppo``/``test_visual_sac``).

SimpleEnvironment with no vector observation and one or two 20x20x3 images filled with the
goal, step size 0.2, the dummy configs with learning rate 3e-4 (SAC: batch 16), the default
``simple`` encoder; the bar is the mean of the last five returns > 0.9.
"""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_sac_settings
from asynctrainer.testing.simple_env import SimpleEnvironment
from tests.ppo.test_learning import dummy_ppo

pytestmark = pytest.mark.learning

ACTIONS = pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
VISUALS = pytest.mark.parametrize("num_visual", [1, 2])


def visual_env(action_sizes: tuple[int, int], num_visual: int) -> SimpleEnvironment:
    return SimpleEnvironment(
        "1D", action_sizes=action_sizes, num_vector=0, num_visual=num_visual, step_size=0.2, seed=1337
    )


@ACTIONS
@VISUALS
async def test_visual_ppo(action_sizes: tuple[int, int], num_visual: int) -> None:
    env = visual_env(action_sizes, num_visual)
    runner = Runner(dummy_ppo("1D", hyperparameters={"learning_rate": 3e-4}), env, seed=1337, stats_writers=[])
    await runner.run()
    assert env.mean_final_reward("1D") > 0.9
    encoders = runner.slots["1D"].latest().encoders
    assert len(encoders) == num_visual and all(e is not None for e in encoders)


@ACTIONS
@VISUALS
async def test_visual_sac(action_sizes: tuple[int, int], num_visual: int) -> None:
    env = visual_env(action_sizes, num_visual)
    settings = dummy_sac_settings("1D", hyperparameters={"batch_size": 16, "learning_rate": 3e-4})
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9
