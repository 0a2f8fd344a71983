"""SAC reaches the learning bars of ML-Agents' own tests on SimpleEnvironment and MemoryEnvironment."""

from __future__ import annotations

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_sac_settings
from asynctrainer.testing.simple_env import MemoryEnvironment, SimpleEnvironment

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


#: ML-Agents' test_recurrent_sac: memory_size 16, sequence_length 16, batch 256, lr 3e-4,
#: buffer_init_steps 1000, steps_per_update 2, 4000 steps; step size 0.2 discrete, 0.5 continuous.
RECURRENT = {"batch_size": 256, "learning_rate": 3e-4, "buffer_init_steps": 1000, "steps_per_update": 2}


@pytest.mark.parametrize(("action_sizes", "step_size"), [((0, 1), 0.2), ((1, 0), 0.5)], ids=["discrete", "continuous"])
async def test_recurrent_sac(action_sizes: tuple[int, int], step_size: float) -> None:
    env = MemoryEnvironment("1D", action_sizes=action_sizes, step_size=step_size, seed=1337)
    network = {"hidden_units": 16, "num_layers": 1, "memory": {"memory_size": 16, "sequence_length": 16}}
    settings = dummy_sac_settings("1D", hyperparameters=RECURRENT, network_settings=network, max_steps=4000)
    runner = Runner(settings, env, seed=1337, stats_writers=[])
    await runner.run()
    assert env.mean_final_reward("1D") > 0.9
    assert runner.slots["1D"].latest().memory_size == 16


async def test_without_memory_sac_does_not_solve_the_memory_environment() -> None:
    env = MemoryEnvironment("1D", action_sizes=(0, 1), step_size=0.2, seed=1337)
    settings = dummy_sac_settings("1D", hyperparameters=RECURRENT, max_steps=4000)
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") < 0.9
