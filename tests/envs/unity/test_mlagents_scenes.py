"""ML-Agents' own multi-agent configs train against the Unity stand-in playing their scenes' specs.

Each config in tests/configs is used as published, with only its sizes cut down so that a test
sees updates in seconds (buffer 256, batch 64, 600 steps, self-play windows in hundreds of steps).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from asynctrainer import Runner
from asynctrainer.envs.unity.sources import UnityEnvFactory
from asynctrainer.poca.trainer import POCATrainer
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.testing.scenes import SCENES, SceneEnvironment
from asynctrainer.testing.unity_standin import UnityStandIn, free_ports

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STEPS = 600


def cut_down(config: str) -> Any:
    data = yaml.safe_load((CONFIGS / config).read_text())
    for behavior in data["behaviors"].values():
        behavior["hyperparameters"].update(batch_size=64, buffer_size=256)
        behavior.update(max_steps=STEPS, summary_freq=200, time_horizon=64, checkpoint_interval=STEPS)
        if "self_play" in behavior:
            behavior["self_play"].update(save_steps=100, swap_steps=100, team_change=300)
    return run_settings_from_dict(data)


#: scene → (config, trainer name → (trainer type, group size: 0 for none), self-play trainers).
CASES: dict[str, tuple[str, dict[str, tuple[str, int]], set[str]]] = {
    "SoccerTwos": ("soccer_twos.yaml", {"SoccerTwos": ("poca", 2)}, {"SoccerTwos"}),
    "StrikersVsGoalie": (
        "strikers_vs_goalie.yaml",
        {"Striker": ("poca", 2), "Goalie": ("poca", 1)},
        {"Striker", "Goalie"},
    ),
    "PushBlockCollab": ("push_block_collab.yaml", {"PushBlockCollab": ("poca", 3)}, set()),
    "WallJump": ("mlagents_walljump_curriculum.yaml", {"SmallWallJump": ("ppo", 0), "BigWallJump": ("ppo", 0)}, set()),
}


def test_every_scene_has_a_case() -> None:
    assert sorted(CASES) == sorted(SCENES)


@pytest.mark.parametrize("scene", sorted(CASES))
async def test_mlagents_config_trains_on_its_scene(scene: str, tmp_path: Path) -> None:
    config, trainers, self_play = CASES[scene]
    port = free_ports()
    standin = UnityStandIn(port, scene=scene, seed=3)
    play = asyncio.create_task(standin.run())
    runner = Runner(cut_down(config), UnityEnvFactory(port), results_dir=tmp_path, seed=3, stats_writers=[])
    result = await runner.run()
    record = await asyncio.wait_for(play, 30)
    assert record.final_status == 400
    assert sorted(runner.trainers) == sorted(trainers)
    assert set(runner.ghosts) == self_play
    for name, (kind, group) in trainers.items():
        trainer = runner.trainers[name]
        assert trainer.trainer_settings.trainer_type == kind
        assert result.steps[name] >= STEPS and result.updates[name] >= 1, (name, result)
        assert (tmp_path / runner.run_id / f"{name}.onnx").is_file()
        if isinstance(trainer, POCATrainer):  # the groups arrived: the critic saw the whole group
            assert trainer.critic is not None and float(trainer.critic.max_agents.numpy()) == group
    sim = standin.sim
    assert isinstance(sim, SceneEnvironment) and sim.episodes > 0
    for name in sim.behaviors:  # every behavior was acted for, every step
        assert sim.actions_taken[name] == record.steps * sim.behaviors[name].agents
    if scene == "WallJump":  # the curriculum's first lessons reached the game on its side channel
        assert set(record.environment_parameters) >= {"big_wall_height", "small_wall_height"}


async def test_an_unknown_scene_and_missing_actions_are_refused() -> None:
    from asynctrainer.errors import SpecError

    with pytest.raises(SpecError, match=r"no scene 'Tennis'.*SoccerTwos"):
        SceneEnvironment("Tennis")
    sim = SceneEnvironment("StrikersVsGoalie")
    await sim.reset()
    with pytest.raises(SpecError, match="'Striker\\?team=0' needs actions for its 2 agents"):
        await sim.step({})
