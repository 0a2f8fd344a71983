"""Tests of asynctrainer.settings: ML-Agents' run config, its defaults and its errors."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from asynctrainer.errors import SettingsError, UnsupportedFeatureError
from asynctrainer.settings import (
    CheckpointSettings,
    EngineSettings,
    EnvSettings,
    NetworkSettings,
    PPOHyperparameters,
    RunSettings,
    SACHyperparameters,
    TrainerSettings,
    behavior_name_for,
    load_run_settings,
    run_settings_from_dict,
)

CONFIGS = Path(__file__).parent / "configs"


def _behavior(settings: dict[str, Any], name: str = "CartPole") -> dict[str, Any]:
    return {"behaviors": {name: settings}}


def _error(data: dict[str, Any]) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        run_settings_from_dict(data)
    assert "\n" not in str(info.value)
    assert "pydantic" not in str(info.value)
    return info.value


# Defaults


def test_ppo_defaults_match_mlagents() -> None:
    trainer = TrainerSettings()
    hp = trainer.hyperparameters
    assert trainer.trainer_type == "ppo"
    assert isinstance(hp, PPOHyperparameters)
    assert (hp.batch_size, hp.buffer_size, hp.learning_rate) == (1024, 10240, 3e-4)
    assert (hp.beta, hp.epsilon, hp.lambd, hp.num_epoch) == (5e-3, 0.2, 0.95, 3)
    assert hp.learning_rate_schedule == "linear"
    assert hp.beta_schedule == hp.epsilon_schedule == "linear"
    assert hp.shared_critic is False


def test_trainer_defaults_match_mlagents() -> None:
    trainer = TrainerSettings()
    assert trainer.max_steps == 500000
    assert trainer.checkpoint_interval == 500000
    assert trainer.keep_checkpoints == 5
    assert trainer.even_checkpoints is False
    assert trainer.time_horizon == 64
    assert trainer.summary_freq == 50000
    assert trainer.init_path is None
    assert trainer.self_play is None and trainer.behavioral_cloning is None
    assert trainer.strict_on_policy is False
    assert list(trainer.reward_signals) == ["extrinsic"]
    extrinsic = trainer.reward_signals["extrinsic"]
    assert (extrinsic.gamma, extrinsic.strength) == (0.99, 1.0)


def test_network_defaults_match_mlagents() -> None:
    network = NetworkSettings()
    assert network.normalize is False
    assert (network.hidden_units, network.num_layers) == (128, 2)
    assert network.vis_encode_type == "simple"
    assert network.memory is None
    assert network.goal_conditioning_type == "hyper"
    assert network.deterministic is False


def test_sac_defaults_match_mlagents() -> None:
    trainer = run_settings_from_dict(_behavior({"trainer_type": "sac"})).behaviors["CartPole"]
    hp = trainer.hyperparameters
    assert isinstance(hp, SACHyperparameters)
    assert (hp.batch_size, hp.buffer_size, hp.learning_rate) == (128, 50000, 3e-4)
    assert hp.learning_rate_schedule == "constant"
    assert (hp.buffer_init_steps, hp.tau, hp.steps_per_update) == (0, 0.005, 1.0)
    assert hp.save_replay_buffer is False
    assert hp.init_entcoef == 1.0
    assert hp.reward_signal_steps_per_update == 1.0


def test_sac_reward_signal_steps_per_update_follows_steps_per_update() -> None:
    data = _behavior({"trainer_type": "sac", "hyperparameters": {"steps_per_update": 10.0}})
    hp = run_settings_from_dict(data).behaviors["CartPole"].hyperparameters
    assert isinstance(hp, SACHyperparameters)
    assert hp.reward_signal_steps_per_update == 10.0


def test_ppo_schedules_follow_learning_rate_schedule() -> None:
    hp = PPOHyperparameters(learning_rate_schedule="constant", epsilon_schedule="linear")
    assert hp.beta_schedule == "constant"
    assert hp.epsilon_schedule == "linear"


def test_run_level_defaults_match_mlagents() -> None:
    run = RunSettings()
    assert run.behaviors == {} and run.default_settings is None
    assert run.environment_parameters is None and run.debug is False
    env = run.env_settings
    assert (env.env_path, env.env_args, env.base_port) == (None, None, 5005)
    assert (env.num_envs, env.num_areas, env.seed, env.timeout_wait) == (1, 1, -1, 60)
    assert (env.max_lifetime_restarts, env.restarts_rate_limit_n) == (10, 1)
    assert env.restarts_rate_limit_period_s == 60
    assert (env.executor, env.num_workers, env.envs_per_worker) == ("local", 1, 1)
    assert env.ray_address is None
    assert run.engine_settings == EngineSettings(
        width=84,
        height=84,
        quality_level=5,
        time_scale=20.0,
        target_frame_rate=-1,
        capture_frame_rate=60,
        no_graphics=False,
    )
    assert run.checkpoint_settings == CheckpointSettings(run_id="ppo", results_dir="results")
    assert run.torch_settings.device is None


def test_load_without_path_gives_defaults_to_every_behavior() -> None:
    run = load_run_settings(None)
    assert run.trainer_settings_for("Anything") == TrainerSettings()


# Merging and numbers


def test_default_settings_are_deep_merged_under_each_behavior() -> None:
    data = {
        "default_settings": {
            "trainer_type": "ppo",
            "hyperparameters": {"beta": 0.01, "batch_size": 64},
            "max_steps": 1000,
        },
        "behaviors": {"A": {"hyperparameters": {"batch_size": 32}}, "B": None},
    }
    run = run_settings_from_dict(data)
    a, b = run.behaviors["A"], run.behaviors["B"]
    assert isinstance(a.hyperparameters, PPOHyperparameters)
    assert (a.hyperparameters.batch_size, a.hyperparameters.beta) == (32, 0.01)
    assert a.max_steps == 1000
    assert b.hyperparameters.batch_size == 64 and b.max_steps == 1000


def test_default_hyperparameters_are_not_merged_into_another_trainer_type() -> None:
    data = {
        "default_settings": {"trainer_type": "ppo", "hyperparameters": {"beta": 0.01}},
        "behaviors": {"A": {"trainer_type": "sac", "hyperparameters": {"tau": 0.01}}},
    }
    hp = run_settings_from_dict(data).behaviors["A"].hyperparameters
    assert isinstance(hp, SACHyperparameters) and hp.tau == 0.01


@pytest.mark.parametrize(("value", "expected"), [("5.0e5", 500000), ("1e6", 1000000), (2.5e6, 2500000), ("300", 300)])
def test_max_steps_accepts_floats_and_float_strings(value: Any, expected: int) -> None:
    run = run_settings_from_dict(_behavior({"max_steps": value}))
    assert run.behaviors["CartPole"].max_steps == expected


def test_max_steps_from_yaml_float_string(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("behaviors:\n  CartPole:\n    max_steps: 5.0e5\n")
    assert load_run_settings(path).behaviors["CartPole"].max_steps == 500000


def test_even_checkpoints_sets_checkpoint_interval() -> None:
    data = _behavior({"even_checkpoints": True, "max_steps": 1000000, "keep_checkpoints": 4})
    trainer = run_settings_from_dict(data).behaviors["CartPole"]
    assert trainer.checkpoint_interval == 250000


# Bad keys and values


@pytest.mark.parametrize(
    ("data", "owner"),
    [
        ({"foo": 1, "behaviors": {}}, "the top level"),
        (_behavior({"foo": 1}), "behaviors.CartPole"),
        (_behavior({"trainer_type": "ppo", "hyperparameters": {"foo": 1}}), "behaviors.CartPole.hyperparameters"),
        (_behavior({"network_settings": {"foo": 1}}), "behaviors.CartPole.network_settings"),
        (_behavior({"reward_signals": {"extrinsic": {"foo": 1}}}), "behaviors.CartPole.reward_signals.extrinsic"),
        ({"env_settings": {"foo": 1}}, "env_settings"),
    ],
)
def test_unknown_key_names_its_path_and_the_allowed_keys(data: dict[str, Any], owner: str) -> None:
    error = _error(data)
    assert type(error) is SettingsError
    assert str(error).startswith(f"The option 'foo' was specified in your YAML file for {owner}, but is invalid.")
    assert "Allowed: " in str(error)
    assert error.key_path == ("foo" if owner == "the top level" else f"{owner}.foo")


def test_unknown_hyperparameter_lists_the_allowed_ones() -> None:
    error = _error(_behavior({"trainer_type": "sac", "hyperparameters": {"beta": 1}}))
    assert "Allowed: batch_size, buffer_init_steps, buffer_size, init_entcoef" in str(error)


def test_wrong_type_names_path_value_and_expectation() -> None:
    error = _error(_behavior({"max_steps": "abc"}))
    assert str(error) == ("behaviors.CartPole.max_steps: 'abc' is not valid: expected an integer.")
    assert error.key_path == "behaviors.CartPole.max_steps"


def test_wrong_literal_lists_the_allowed_values() -> None:
    data = _behavior({"trainer_type": "ppo", "hyperparameters": {"learning_rate_schedule": "cosine"}})
    error = _error(data)
    assert "learning_rate_schedule: 'cosine' is not valid" in str(error)
    assert "'constant' or 'linear'" in str(error)


@pytest.mark.parametrize("size", [0, -5])
@pytest.mark.parametrize("key", ["batch_size", "buffer_size", "num_epoch"])
def test_non_positive_sizes_are_refused(key: str, size: int) -> None:
    error = _error(_behavior({"trainer_type": "ppo", "hyperparameters": {key: size}}))
    assert str(error) == (f"behaviors.CartPole.hyperparameters.{key}: {size} is not valid: must be > 0.")


def test_batch_size_larger_than_buffer_size_is_refused() -> None:
    data = _behavior({"trainer_type": "ppo", "hyperparameters": {"batch_size": 2048, "buffer_size": 1024}})
    error = _error(data)
    assert "batch_size (2048) must not exceed buffer_size (1024)" in str(error)
    assert error.key_path == "behaviors.CartPole.hyperparameters.batch_size"


def test_unknown_trainer_type_lists_the_supported_ones() -> None:
    error = _error(_behavior({"trainer_type": "a2c"}))
    assert type(error) is SettingsError
    assert str(error) == ("behaviors.CartPole.trainer_type: 'a2c' is not valid: expected one of ppo, sac, poca.")


def test_hyperparameters_without_trainer_type_are_refused() -> None:
    error = _error(_behavior({"hyperparameters": {"batch_size": 64}}))
    assert error.key_path == "behaviors.CartPole.hyperparameters"
    assert "no trainer_type" in str(error)


def test_unknown_reward_signal_is_refused() -> None:
    error = _error(_behavior({"reward_signals": {"extrinsik": {}}}))
    assert type(error) is SettingsError
    assert error.key_path == "behaviors.CartPole.reward_signals.extrinsik"


def test_models_built_in_python_raise_settings_error() -> None:
    with pytest.raises(SettingsError, match="max_steps: 'x' is not valid"):
        TrainerSettings(max_steps="x")  # type: ignore[arg-type]


# Loading files


def test_missing_file() -> None:
    with pytest.raises(SettingsError, match=r"Config file '.*nope\.yaml' was not found\."):
        load_run_settings(CONFIGS / "nope.yaml")


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="is not a file"):
        load_run_settings(tmp_path)


def test_bad_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("behaviors:\n  CartPole:\n    max_steps: 10\n   bad: [\n")
    with pytest.raises(SettingsError) as info:
        load_run_settings(path)
    message = str(info.value)
    assert str(path) in message and "not valid YAML" in message
    assert "line " in message and "column " in message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(SettingsError, match="mapping with a `behaviors` key"):
        load_run_settings(path)


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="mapping with a `behaviors` key"):
        load_run_settings(path)


# Unsupported features


@pytest.mark.parametrize(
    ("data", "key_path"),
    [
        (
            _behavior({"trainer_type": "poca", "network_settings": {"memory": {}}}),
            "behaviors.CartPole.network_settings.memory",
        ),
    ],
)
def test_unsupported_feature_is_refused_in_one_line(data: dict[str, Any], key_path: str) -> None:
    with pytest.raises(UnsupportedFeatureError) as info:
        run_settings_from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{key_path}: ")
    assert "not supported yet" in message
    assert info.value.key_path == key_path


def test_memory_for_ppo_loads_and_a_sequence_longer_than_the_batch_is_refused() -> None:
    memory = {"network_settings": {"memory": {"memory_size": 16, "sequence_length": 32}}}
    run = run_settings_from_dict(_behavior({**memory, "trainer_type": "ppo", "hyperparameters": {"batch_size": 32}}))
    loaded = run.behaviors["CartPole"].network_settings.memory
    assert loaded is not None and (loaded.memory_size, loaded.sequence_length) == (16, 32)
    with pytest.raises(SettingsError) as info:
        run_settings_from_dict(_behavior({**memory, "trainer_type": "ppo", "hyperparameters": {"batch_size": 16}}))
    assert info.value.key_path == "behaviors.CartPole.network_settings.memory.sequence_length"
    assert "sequence_length 32 is greater than batch_size 16" in str(info.value)


def test_poca_takes_ppo_hyperparameters_but_not_shared_critic_and_warns_of_other_signals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from asynctrainer.settings import POCAHyperparameters

    data = _behavior({"trainer_type": "poca", "hyperparameters": {"beta": 0.01, "lambd": 0.9, "num_epoch": 2}})
    poca = run_settings_from_dict(data).behaviors["CartPole"]
    assert isinstance(poca.hyperparameters, POCAHyperparameters)
    assert (poca.hyperparameters.beta, poca.hyperparameters.lambd, poca.hyperparameters.num_epoch) == (0.01, 0.9, 2)
    error = _error(_behavior({"trainer_type": "poca", "hyperparameters": {"shared_critic": True}}))
    assert "shared_critic" in str(error)
    with caplog.at_level("WARNING", logger="asynctrainer"):
        run_settings_from_dict(_behavior({"trainer_type": "poca", "reward_signals": {"extrinsic": {}, "rnd": {}}}))
    assert "Reward signal rnd is not supported with the POCA trainer" in caplog.text


def test_gail_encoding_size_is_noticed_and_a_gail_without_demo_refused(caplog: pytest.LogCaptureFixture) -> None:
    data = _behavior({"reward_signals": {"gail": {"encoding_size": 128}}})
    error = _error(data)
    assert error.key_path == "behaviors.CartPole.reward_signals.gail" and "needs demo_path" in str(error)
    assert [r.getMessage() for r in caplog.records if "encoding_size" in r.getMessage()], caplog.text


def test_other_visual_encoders_are_accepted() -> None:
    data = _behavior({"network_settings": {"vis_encode_type": "nature_cnn"}})
    run = run_settings_from_dict(data)
    assert run.behaviors["CartPole"].network_settings.vis_encode_type == "nature_cnn"


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asynctrainer" and r.levelno == logging.WARNING]


def test_an_inert_key_warns_once_per_load_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    sac = {"trainer_type": "sac", "hyperparameters": {"reward_signal_steps_per_update": 4.0}}
    data = {"default_settings": sac, "behaviors": {"A": sac, "B": sac, "C": {}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log line, not a Python warning
        run_settings_from_dict(data)
    (message,) = _notices(caplog)
    assert message.startswith("hyperparameters.reward_signal_steps_per_update (4.0) is accepted but has no effect yet")
    caplog.clear()
    run_settings_from_dict(data)
    assert len(_notices(caplog)) == 1, "once per load"


@pytest.mark.parametrize(
    "network",
    [{"vis_encode_type": "nature_cnn"}, {"goal_conditioning_type": "none"}, {"goal_conditioning_type": "hyper"}],
)
def test_network_keys_take_effect_without_a_notice(network: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    run_settings_from_dict({"default_settings": {"network_settings": network}, "behaviors": {"A": {}}})
    NetworkSettings(**network)  # type: ignore[arg-type]
    assert _notices(caplog) == []


def test_an_inert_key_in_python_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    SACHyperparameters(reward_signal_steps_per_update=4.0)
    assert len(_notices(caplog)) == 1


def test_environment_parameter_constants_and_samplers_are_kept() -> None:
    parameters = {
        "gravity": 9.81,
        "mass": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0.5, "max_value": 10}},
    }
    run = run_settings_from_dict({"environment_parameters": parameters})
    assert run.environment_parameters == parameters


# Deprecated options


@pytest.mark.parametrize(("key", "value"), [("threaded", True), ("framework", "tensorflow")])
def test_deprecated_option_warns_and_loads(key: str, value: Any, caplog: pytest.LogCaptureFixture) -> None:
    run = run_settings_from_dict(_behavior({key: value}))
    assert run.behaviors["CartPole"].max_steps == 500000
    (message,) = _notices(caplog)
    assert key in message


# Behavior names


def test_single_configured_behavior_names_the_env_behavior() -> None:
    run = run_settings_from_dict(_behavior({}, name="Balance"))
    assert run.resolve_behavior_name("default", "CartPole-v1") == "Balance"


@pytest.mark.parametrize(
    ("env_id", "expected"),
    [
        ("CartPole-v1", "CartPole"),
        ("ALE/Pong-v5", "Pong"),
        ("Pendulum", "Pendulum"),
        ("my.module:make_env", "make_env"),
        ("builds/envs/Walker", "Walker"),
        ("C:\\builds\\Walker-v2", "Walker"),
        (None, "EnvBehavior"),
    ],
)
def test_behavior_named_after_env_id_without_version(env_id: str | None, expected: str) -> None:
    run = run_settings_from_dict({"behaviors": {"A": {}, "B": {}}})
    assert run.resolve_behavior_name("EnvBehavior", env_id) == expected
    if env_id is not None:
        assert behavior_name_for(env_id) == expected


def test_an_env_that_names_a_configured_behavior_keeps_its_name() -> None:
    run = run_settings_from_dict({"behaviors": {"Seeker": {}, "Hider": {}}})
    assert run.resolve_behavior_name("Hider", "games.hide:make_env") == "Hider"


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "naming_factories"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "envs.py").write_text("import gymnasium\n\ndef make_env():\n    return gymnasium.make('CartPole-v1')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "naming_factories.envs:make_env"


def test_settings_and_the_gymnasium_adapter_give_one_name(factory_module: str) -> None:
    import gymnasium

    from asynctrainer.envs.gymnasium_env import load_env

    namespaced = "asynctrainer_naming/Corridor-v0"  # a gymnasium id with a path
    if namespaced not in gymnasium.registry:
        gymnasium.register(id=namespaced, entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv")
    run = run_settings_from_dict({"behaviors": {"A": {}, "B": {}}})
    names = {}
    for env_id in ("CartPole-v1", factory_module, namespaced):
        env = load_env(env_id)
        (env_name,) = env.behavior_specs
        names[env_id] = env_name
        assert run.resolve_behavior_name(env_name, env_id) == env_name == behavior_name_for(env_id)
    assert list(names.values()) == ["CartPole", "make_env", "Corridor"]


def test_trainer_settings_for_falls_back_to_default_settings() -> None:
    data = {"default_settings": {"max_steps": 123}, "behaviors": {"A": {}}}
    run = run_settings_from_dict(data)
    assert run.trainer_settings_for("A").max_steps == 123
    assert run.trainer_settings_for("CartPole").max_steps == 123


def test_trainer_settings_for_unknown_behavior_lists_the_configured_ones() -> None:
    run = run_settings_from_dict({"behaviors": {"A": {}, "B": {}}})
    with pytest.raises(SettingsError) as info:
        run.trainer_settings_for("CartPole")
    assert "'CartPole'" in str(info.value) and "(configured: A, B)" in str(info.value)
    assert info.value.key_path == "behaviors.CartPole"


# Resolved config


def test_to_yaml_dict_round_trips() -> None:
    data = {
        "default_settings": {"hyperparameters": {"beta": 0.01}, "trainer_type": "ppo"},
        "behaviors": {"A": {"even_checkpoints": True, "max_steps": "1e6"}, "B": {"trainer_type": "sac"}},
        "environment_parameters": {"gravity": 9.81},
        "env_settings": {"env_args": ["--x", "1"], "executor": "ray"},
        "checkpoint_settings": {"run_id": "r1"},
    }
    run = run_settings_from_dict(data)
    resolved = yaml.safe_load(yaml.safe_dump(run.to_yaml_dict()))
    assert run_settings_from_dict(resolved) == run


def test_to_yaml_dict_shows_resolved_values() -> None:
    resolved = RunSettings(behaviors={"A": TrainerSettings()}).to_yaml_dict()
    hp = resolved["behaviors"]["A"]["hyperparameters"]
    assert hp["beta_schedule"] == "linear" and hp["epsilon_schedule"] == "linear"
    assert "threaded" not in resolved["behaviors"]["A"]
    assert resolved["behaviors"]["A"]["reward_signals"]["extrinsic"] == {
        "gamma": 0.99,
        "strength": 1.0,
        "network_settings": None,
    }


def test_env_args_string_is_split() -> None:
    assert EnvSettings(env_args="--a 1").env_args == ["--a", "1"]  # type: ignore[arg-type]


# Reward signals


def test_empty_reward_signals_are_refused_at_load() -> None:
    error = _error(_behavior({"reward_signals": {}}))
    assert type(error) is SettingsError
    assert error.key_path == "behaviors.CartPole.reward_signals"
    assert str(error).startswith("behaviors.CartPole.reward_signals: {} is not valid: ")
    assert "needs at least one signal" in str(error)


def test_empty_reward_signals_in_default_settings_are_refused() -> None:
    error = _error({"default_settings": {"reward_signals": {}}, "behaviors": {}})
    assert error.key_path == "default_settings.reward_signals"


def test_reward_signals_of_a_behavior_merge_over_default_extrinsic() -> None:
    run = run_settings_from_dict(_behavior({"reward_signals": {"extrinsic": {"gamma": 0.9}}}))
    assert run.behaviors["CartPole"].reward_signals["extrinsic"].gamma == 0.9


# Run ids


@pytest.mark.parametrize("run_id", ["../x", "a/b", "/abs/path", "a\\b", "..", ".", "", "a\0b"])
def test_run_id_that_is_not_a_plain_name_is_refused(run_id: str) -> None:
    error = _error({"checkpoint_settings": {"run_id": run_id}})
    assert type(error) is SettingsError
    assert error.key_path == "checkpoint_settings.run_id"
    assert "a run id must be a plain name" in str(error)


def test_run_id_is_checked_when_built_in_python() -> None:
    with pytest.raises(SettingsError, match=r"checkpoint_settings\.run_id: '\.\./x' is not valid"):
        RunSettings(checkpoint_settings={"run_id": "../x"})  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match=r"run_id: '\.\.' is not valid"):
        CheckpointSettings(run_id="..")


@pytest.mark.parametrize("run_id", ["ppo", "cartpole-2", "run.1", "..x", "x..", "r i"])
def test_plain_run_ids_are_accepted(run_id: str) -> None:
    run = run_settings_from_dict({"checkpoint_settings": {"run_id": run_id}})
    assert run.checkpoint_settings.write_path == os.path.join("results", run_id)
