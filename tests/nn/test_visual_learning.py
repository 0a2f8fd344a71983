"""PPO and SAC reach ML-Agents' bars from visual observations alone (its ``test_visual_ppo``/``test_visual_sac``).

SimpleEnvironment with no vector observation and one or two 20x20x3 images filled with the
goal, step size 0.2, the dummy configs with learning rate 3e-4 (SAC: batch 16), the default
``simple`` encoder; the bar is the mean of the last five returns > 0.9. ``test_visual_advanced_*``
are ML-Agents' tests of the other encoders at their minimum sizes, with its bar of 0.5.
"""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_ppo_settings, dummy_sac_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

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
    runner = Runner(dummy_ppo_settings("1D", hyperparameters={"learning_rate": 3e-4}), env, seed=1337, stats_writers=[])
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


#: ML-Agents' test_visual_advanced_*: step 0.5, 36x36x3 images (match3 5x5x5), 1x16 units, lr 3e-4, bar 0.5.
ADVANCED = pytest.mark.parametrize(
    ("vis_encode_type", "num_visual"), [("resnet", 1), ("nature_cnn", 2), ("match3", 2)], ids=lambda v: str(v)
)


def advanced_env(vis_encode_type: str, num_visual: int) -> SimpleEnvironment:
    size = (5, 5, 5) if vis_encode_type == "match3" else (36, 36, 3)
    return SimpleEnvironment("1D", num_vector=0, num_visual=num_visual, vis_obs_size=size, step_size=0.5, seed=1337)


@ADVANCED
async def test_visual_advanced_ppo(vis_encode_type: str, num_visual: int) -> None:
    env = advanced_env(vis_encode_type, num_visual)
    network = {"hidden_units": 16, "num_layers": 1, "vis_encode_type": vis_encode_type}
    settings = dummy_ppo_settings(
        "1D", hyperparameters={"learning_rate": 3e-4}, network_settings=network, max_steps=900
    )
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.5


@pytest.mark.parametrize("vis_encode_type", ["resnet", "nature_cnn", "match3"])
async def test_visual_advanced_sac(vis_encode_type: str) -> None:
    env = advanced_env(vis_encode_type, 1)
    network = {"hidden_units": 16, "num_layers": 1, "vis_encode_type": vis_encode_type}
    hyper = {"batch_size": 16, "learning_rate": 3e-4, "buffer_init_steps": 0}
    settings = dummy_sac_settings("1D", hyperparameters=hyper, network_settings=network, max_steps=100)
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.5
