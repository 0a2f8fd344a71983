"""Every YAML config in examples/ loads and says what its comment promises; real ML-Agents configs load."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from asynctrainer import load_run_settings
from asynctrainer.errors import UnsupportedFeatureError
from asynctrainer.settings import PPOHyperparameters

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_loads(path: Path) -> None:
    settings = load_run_settings(str(path))
    assert settings.behaviors
    assert settings.env_settings.env_path


@pytest.mark.parametrize(
    ("name", "trainer_type", "env_id", "max_steps"),
    [
        ("cartpole_ppo.yaml", "ppo", "CartPole-v1", None),
        ("pendulum_ppo.yaml", "ppo", "Pendulum-v1", None),
        ("pendulum_sac.yaml", "sac", "Pendulum-v1", 20_000),  # RLlib's bar: ≥ −250 within 20k steps
        ("cartpole_memory_ppo.yaml", "ppo", "cartpole_no_velocity:make_env", None),
    ],
)
def test_example_config_trains_what_its_name_says(
    name: str, trainer_type: str, env_id: str, max_steps: int | None
) -> None:
    settings = load_run_settings(str(EXAMPLES / name))
    (behavior,) = settings.behaviors.values()
    assert behavior.trainer_type == trainer_type
    assert settings.env_settings.env_path == env_id
    if max_steps is not None:
        assert behavior.max_steps == max_steps


# Real ML-Agents configs (tests/configs/README.md says where each comes from)

CONFIGS = Path(__file__).resolve().parent / "configs"

#: Each config in tests/configs: None if it loads, else the key path of the feature refused as not supported yet.
MLAGENTS_CONFIGS: dict[str, str | None] = {
    "3dball.yaml": None,
    "walker.yaml": None,
    "gridworld_sac.yaml": None,
    "mlagents_3dball_randomize_transitional.yaml": None,
    "pyramids.yaml": None,
    "soccer_twos.yaml": None,
    "strikers_vs_goalie.yaml": None,
    "push_block_collab.yaml": None,
    "hallway.yaml": None,
    "mlagents_walljump_curriculum.yaml": None,
    "mlagents_pre017_trainer_config.yaml": None,
}


def test_every_config_in_tests_configs_is_listed() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(MLAGENTS_CONFIGS)


@pytest.mark.parametrize(("name", "refused"), sorted(MLAGENTS_CONFIGS.items()))
def test_mlagents_config_loads_or_is_refused_only_for_an_unbuilt_feature(name: str, refused: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # legacy keys are reported on the logger, not as Python warnings
        if refused is None:
            assert load_run_settings(CONFIGS / name).behaviors
            return
        with pytest.raises(UnsupportedFeatureError) as info:
            load_run_settings(CONFIGS / name)
    message = str(info.value)
    assert info.value.key_path == refused
    assert "not supported yet" in message and "\n" not in message


def test_pre_017_config_loads_with_its_self_play_and_memory(caplog: pytest.LogCaptureFixture) -> None:
    run = load_run_settings(CONFIGS / "mlagents_pre017_trainer_config.yaml")
    assert len(run.behaviors) == 24
    assert run.behaviors["Pyramids"].reward_signals["curiosity"].strength == 0.02
    walker = run.behaviors["Walker"]
    assert isinstance(walker.hyperparameters, PPOHyperparameters)
    assert (walker.hyperparameters.batch_size, walker.hyperparameters.beta) == (2048, 5.0e-3)  # own, then default's
    assert (walker.network_settings.num_layers, walker.max_steps) == (3, 20_000_000)
    assert walker.reward_signals["extrinsic"].gamma == 0.995
    tennis = run.behaviors["Tennis"].self_play
    assert tennis is not None
    assert (tennis.window, tennis.save_steps, tennis.swap_steps, tennis.team_change) == (10, 50000, 50000, 100000)
    assert walker.self_play is None
    memory = run.behaviors["Hallway"].network_settings.memory
    assert memory is not None and (memory.memory_size, memory.sequence_length) == (128, 64)
    messages = [r.getMessage() for r in caplog.records if r.name == "asynctrainer"]
    assert len(messages) == len(set(messages)) and any("`default`" in m for m in messages)


def test_0_17_parameter_randomization_is_upgraded() -> None:
    run = load_run_settings(CONFIGS / "mlagents_3dball_randomize_transitional.yaml")
    assert run.environment_parameters == {
        "mass": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0.5, "max_value": 10}},
        "gravity": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 7, "max_value": 12}},
        "scale": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0.75, "max_value": 3}},
    }
    assert run.behaviors["3DBall"].hyperparameters.batch_size == 64


def test_the_memory_example_hides_cartpoles_velocities_and_trains_with_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from asynctrainer.envs.gymnasium_env import load_env

    monkeypatch.syspath_prepend(str(EXAMPLES))
    settings = load_run_settings(str(EXAMPLES / "cartpole_memory_ppo.yaml"))
    (behavior,) = settings.behaviors.values()
    assert behavior.network_settings.memory is not None
    env = load_env(settings.env_settings.env_path or "", num_envs=2, seed=0)
    (spec,) = env.behavior_specs.values()
    assert [o.shape for o in spec.observation_specs] == [(2,)]  # cart position and pole angle only
    obs = env._reset_sync()[env.behavior_name].decision.obs[0]
    assert obs.shape == (2, 2) and np.isfinite(obs).all()
