"""Legacy ML-Agents configs load: upgraded as ML-Agents' config upgrade does, each legacy key reported once."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from asynctrainer.errors import SettingsError
from asynctrainer.settings import PPOHyperparameters, SACHyperparameters, run_settings_from_dict

FLAT = {
    "default": {
        "trainer": "ppo",
        "batch_size": 1024,
        "beta": 5.0e-3,
        "buffer_size": 10240,
        "hidden_units": 128,
        "max_steps": 5.0e5,
        "memory_size": 128,
        "normalize": False,
        "sequence_length": 64,
        "use_recurrent": False,
        "vis_encode_type": "simple",
        "reward_signals": {"extrinsic": {"strength": 1.0, "gamma": 0.99}},
    },
    "3DBall": {"normalize": True, "batch_size": 64, "buffer_size": 12000, "time_horizon": 1000, "lambd": 0.99},
    "Basic": {"batch_size": 32, "num_layers": 1, "hidden_units": 20, "buffer_size": 256},
}

MODERN = {
    "default_settings": {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 1024, "beta": 5.0e-3, "buffer_size": 10240},
        "network_settings": {"hidden_units": 128, "normalize": False, "vis_encode_type": "simple"},
        "max_steps": 5.0e5,
        "reward_signals": {"extrinsic": {"strength": 1.0, "gamma": 0.99}},
    },
    "behaviors": {
        "3DBall": {
            "hyperparameters": {"batch_size": 64, "buffer_size": 12000, "lambd": 0.99},
            "network_settings": {"normalize": True},
            "time_horizon": 1000,
        },
        "Basic": {
            "hyperparameters": {"batch_size": 32, "buffer_size": 256},
            "network_settings": {"num_layers": 1, "hidden_units": 20},
        },
    },
}


@pytest.fixture(autouse=True)
def _no_python_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # notices are log lines, never Python warnings
        yield


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asynctrainer" and r.levelno == logging.WARNING]


def _once_each(caplog: pytest.LogCaptureFixture, *keys: str) -> None:
    messages = _notices(caplog)
    for key in keys:
        naming = [m for m in messages if f"`{key}`" in m]
        assert len(naming) == 1, (key, messages)


def test_flat_format_loads_as_its_current_form(caplog: pytest.LogCaptureFixture) -> None:
    upgraded = run_settings_from_dict(FLAT)
    assert upgraded == run_settings_from_dict(MODERN)
    ball = upgraded.behaviors["3DBall"]
    assert isinstance(ball.hyperparameters, PPOHyperparameters)
    assert (ball.hyperparameters.batch_size, ball.hyperparameters.beta, ball.hyperparameters.lambd) == (64, 5e-3, 0.99)
    assert ball.network_settings.normalize is True and ball.network_settings.memory is None
    assert ball.max_steps == 500000 and ball.time_horizon == 1000
    assert upgraded.trainer_settings_for("Unlisted").hyperparameters.batch_size == 1024  # default as ML-Agents <0.17
    _once_each(caplog, "default", "trainer", "batch_size", "beta", "lambd", "hidden_units", "use_recurrent")
    assert "behaviors at the top level (3DBall, Basic)" in " ".join(_notices(caplog))
    assert not any("memory_size`" in m and "use_recurrent" not in m for m in _notices(caplog))


def test_each_legacy_key_is_reported_once_per_load(caplog: pytest.LogCaptureFixture) -> None:
    run_settings_from_dict(FLAT)
    first = _notices(caplog)
    assert len(first) == len(set(first))
    caplog.clear()
    run_settings_from_dict(FLAT)
    assert _notices(caplog) == first


def test_flat_behavior_under_behaviors_is_upgraded() -> None:
    flat = {"trainer": "sac", "batch_size": 64, "tau": 0.01, "hidden_units": 64, "max_steps": "1e5"}
    behavior = run_settings_from_dict({"behaviors": {"B": flat}}).behaviors["B"]
    assert isinstance(behavior.hyperparameters, SACHyperparameters)
    assert (behavior.hyperparameters.batch_size, behavior.hyperparameters.tau) == (64, 0.01)
    assert (behavior.network_settings.hidden_units, behavior.max_steps) == (64, 100000)


def test_a_hyperparameter_of_the_other_trainer_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    data = {"default": {"trainer": "ppo", "beta": 0.01}, "Walker": {"trainer": "sac", "tau": 0.01}}
    walker = run_settings_from_dict(data).behaviors["Walker"]
    assert isinstance(walker.hyperparameters, SACHyperparameters)
    assert any("`beta` is not a hyperparameter of trainer sac" in m for m in _notices(caplog))


def test_use_recurrent_becomes_memory() -> None:
    data = {"Hallway": {"trainer": "ppo", "use_recurrent": True, "sequence_length": 32, "memory_size": 64}}
    memory = run_settings_from_dict(data).behaviors["Hallway"].network_settings.memory
    assert memory is not None and (memory.sequence_length, memory.memory_size) == (32, 64)


def test_flat_behavior_without_trainer_is_refused_naming_it() -> None:
    with pytest.raises(SettingsError) as info:
        run_settings_from_dict({"3DBall": {"batch_size": 64}})
    assert info.value.key_path == "3DBall"
    assert "trainer: ppo" in str(info.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"default": {"trainer": "ppo", "num_updatez": 1}, "A": {}}, "num_updatez"),
        ({"behaviors": {"A": {"trainer": "ppo", "bogus": 1}}}, "bogus"),
        ({"behaviors": {"A": {"trainer_type": "ppo", "batch_size": 64}}}, "batch_size"),  # flat only with trainer
    ],
)
def test_a_key_ml_agents_never_had_stays_an_error(data: dict[str, Any], key: str) -> None:
    with pytest.raises(SettingsError) as info:
        run_settings_from_dict(data)
    assert type(info.value) is SettingsError
    owner = "default_settings" if "default" in data else "behaviors.A"  # `default` is checked as default_settings
    assert str(info.value).startswith(f"The option '{key}' was specified in your YAML file for {owner}, but is")


@pytest.mark.parametrize("key", ["threaded", "framework", "output_path"])
def test_ignored_trainer_keys_are_reported_and_dropped(key: str, caplog: pytest.LogCaptureFixture) -> None:
    value = {"threaded": True, "framework": "pytorch", "output_path": "results/run/A"}[key]
    data = {"default_settings": {key: value}, "behaviors": {"A": {key: value}, "B": {}}}
    run = run_settings_from_dict(data)
    (message,) = _notices(caplog)
    assert message.startswith(f"`{key}`")
    assert key not in run.to_yaml_dict()["behaviors"]["A"]


def test_threaded_names_its_current_form(caplog: pytest.LogCaptureFixture) -> None:
    run_settings_from_dict({"behaviors": {"A": {"threaded": False}}})
    assert "`strict_on_policy: true`" in _notices(caplog)[0]


def test_parameter_randomization_becomes_environment_parameters(caplog: pytest.LogCaptureFixture) -> None:
    data = {
        "behaviors": {"3DBall": {}},
        "parameter_randomization": {
            "resampling-interval": 5000,
            "mass": {"sampler-type": "uniform", "min_value": 0.5, "max_value": 10},
            "gravity": {"sampler-type": "multirange_uniform", "intervals": [[7, 10], [15, 20]]},
            "scale": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 1.0, "st_dev": 0.1}},
        },
    }
    run = run_settings_from_dict(data)
    assert run.environment_parameters == {
        "mass": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0.5, "max_value": 10}},
        "gravity": {"sampler_type": "multirangeuniform", "sampler_parameters": {"intervals": [[7, 10], [15, 20]]}},
        "scale": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 1.0, "st_dev": 0.1}},
    }
    _once_each(caplog, "parameter_randomization", "parameter_randomization.resampling-interval")
    assert any("`environment_parameters`" in m for m in _notices(caplog))


def test_curriculum_becomes_lessons(caplog: pytest.LogCaptureFixture) -> None:
    data = {
        "behaviors": {"SmallWallJump": {}},
        "curriculum": {
            "SmallWallJump": {
                "measure": "progress",
                "thresholds": [0.1, 0.3, 0.5],
                "min_lesson_length": 100,
                "signal_smoothing": True,
                "parameters": {"small_wall_height": [1.5, 2.0, 2.5, 4.0]},
            }
        },
    }
    lessons = run_settings_from_dict(data).environment_parameters["small_wall_height"]["curriculum"]  # type: ignore[index]
    assert [lesson["value"] for lesson in lessons] == [1.5, 2.0, 2.5, 4.0]
    criteria = [lesson.get("completion_criteria") for lesson in lessons]
    assert [c["threshold"] for c in criteria[:3]] == [0.1, 0.3, 0.5] and criteria[3] is None
    assert all(c["behavior"] == "SmallWallJump" and c["measure"] == "progress" for c in criteria[:3])
    _once_each(caplog, "curriculum")


def test_curriculum_with_a_wrong_number_of_lesson_values_is_refused() -> None:
    curriculum = {"A": {"measure": "reward", "thresholds": [1.0], "parameters": {"h": [1.0, 2.0, 3.0]}}}
    with pytest.raises(SettingsError) as info:
        run_settings_from_dict({"behaviors": {"A": {}}, "curriculum": curriculum})
    assert info.value.key_path == "curriculum.A.parameters.h"
    assert "expected a list of 2 lesson values" in str(info.value)


def test_legacy_and_current_environment_parameters_together_are_refused() -> None:
    data = {"environment_parameters": {"g": 9.8}, "parameter_randomization": {"m": {"sampler-type": "uniform"}}}
    with pytest.raises(SettingsError, match="keep environment_parameters"):
        run_settings_from_dict(data)


def test_engine_settings_of_recent_releases_load() -> None:
    run = run_settings_from_dict({"engine_settings": {"no_graphics": True, "no_graphics_monitor": True}})
    assert run.engine_settings.no_graphics_monitor is True
