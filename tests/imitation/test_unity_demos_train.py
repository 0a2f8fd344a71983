"""GAIL and behavioral cloning from Unity's own demonstrations train against a GameSession with their specs."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer import GameSession, Runner, load_demonstration
from asynctrainer.errors import EnvError
from asynctrainer.runtime.stats import MemoryWriter
from asynctrainer.settings import run_settings_from_dict

DEMOS = Path(__file__).resolve().parents[1] / "data" / "demos"


@pytest.mark.parametrize("stem", ["ExpertBasic", "Expert3DBall"])
async def test_gail_and_cloning_from_a_unity_demo_train_on_its_specs(stem: str) -> None:
    path = DEMOS / f"{stem}.demo"
    demo = load_demonstration(path)
    name = demo.behavior_name
    settings = run_settings_from_dict(
        {
            "behaviors": {
                name: {
                    "trainer_type": "ppo",
                    "hyperparameters": {"batch_size": 32, "buffer_size": 128},
                    "network_settings": {"hidden_units": 32, "num_layers": 1},
                    "reward_signals": {
                        "extrinsic": {"strength": 1.0},
                        "gail": {"demo_path": str(path), "use_actions": True, "strength": 0.1},
                    },
                    "behavioral_cloning": {"demo_path": str(path), "steps": 1000},
                    "max_steps": 400,
                    "summary_freq": 128,
                }
            }
        }
    )
    session = GameSession({name: demo.spec})
    keep = MemoryWriter()
    rng = np.random.default_rng(0)
    size = demo.spec.observation_specs[0].shape
    async with Runner(settings, session, seed=0, stats_writers=[keep]) as runner:

        async def agent(agent_id: int) -> None:
            with contextlib.suppress(EnvError):  # the session closes when the run ends
                while True:
                    for _ in range(20):
                        await session.decide(agent_id, rng.normal(size=size), reward=0.1)
                    await session.decide(agent_id, rng.normal(size=size), reward=1.0, terminated=True)

        agents = [asyncio.create_task(agent(i)) for i in (1, 2)]
        result = await asyncio.wait_for(runner.wait(), 120)
        for task in agents:
            task.cancel()
        await asyncio.gather(*agents, return_exceptions=True)
    assert result.updates[name] >= 2
    stats: dict[str, Any] = {}
    for record in keep.records:
        stats.update(record.values)
    for key in ("Losses/GAIL Loss", "Policy/GAIL Expert Estimate", "Losses/Pretraining Loss", "Policy/Gail Reward"):
        assert key in stats, sorted(stats)
