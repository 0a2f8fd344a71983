"""SAC reaches ML-Agents' learning bars on SimpleEnvironment (reference: mlagents.md §6)."""

from __future__ import annotations

from typing import Any

import pytest

from asynctrainer import Runner
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.testing.simple_env import SimpleEnvironment

pytestmark = pytest.mark.learning


def dummy_sac(name: str, **overrides: Any) -> Any:
    """ML-Agents' dummy SAC config: lr 5e-3 constant, batch 8, buffer_init 100, buffer 5000,
    tau 0.01, init_entcoef 0.01, 1×16 units, summary 100, 1000 steps."""
    hyper = {
        "batch_size": 8,
        "buffer_size": 5000,
        "buffer_init_steps": 100,
        "learning_rate": 5e-3,
        "learning_rate_schedule": "constant",
        "tau": 0.01,
        "init_entcoef": 0.01,
    }
    hyper.update(overrides.pop("hyperparameters", {}))
    cfg = {
        "trainer_type": "sac",
        "hyperparameters": hyper,
        "network_settings": {"hidden_units": 16, "num_layers": 1},
        "summary_freq": 100,
        "max_steps": 1000,
        **overrides,
    }
    return run_settings_from_dict({"behaviors": {name: cfg}})


@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_sac_1d(action_sizes: tuple[int, int]) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    runner = Runner(dummy_sac("1D"), env, seed=1337, stats_writers=[])
    result = await runner.run()
    assert result.updates["1D"] > 0
    assert env.mean_final_reward("1D") > 0.9


async def test_sac_2d_continuous() -> None:
    # ML-Agents' test_2d_sac: step size 0.8, buffer_init_steps 2000, 3000 steps, bar 0.8.
    env = SimpleEnvironment("2D", action_sizes=(2, 0), step_size=0.8, seed=1337)
    settings = dummy_sac("2D", hyperparameters={"buffer_init_steps": 2000}, max_steps=3000)
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("2D") > 0.8
