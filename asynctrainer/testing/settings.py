"""Small run configs for tests: one behavior, tiny networks and buffers, overridable per key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asynctrainer.settings import RunSettings, run_settings_from_dict

__all__ = ["dummy_ppo_config", "dummy_ppo_settings", "dummy_sac_config", "dummy_sac_settings", "make_run_settings"]


def make_run_settings(
    behavior: str = "Counter", *, env_settings: Mapping[str, Any] | None = None, **trainer: Any
) -> RunSettings:
    """A one-behavior PPO run config with small sizes (32-unit network, buffer of 32, 200 steps).

    Keyword arguments override the behavior's trainer settings; ``hyperparameters`` is merged
    into the defaults rather than replacing them::

        make_run_settings("1D", max_steps=500, hyperparameters={"buffer_size": 64})

    ``env_settings`` becomes the config's ``env_settings`` section.
    """
    hyper = {"batch_size": 16, "buffer_size": 32, "learning_rate": 5e-3, "learning_rate_schedule": "constant"}
    hyper.update(trainer.pop("hyperparameters", {}))
    cfg: dict[str, Any] = {
        "trainer_type": "ppo",
        "hyperparameters": hyper,
        "network_settings": {"hidden_units": 32, "num_layers": 1},
        "max_steps": 200,
        "summary_freq": 50,
        "time_horizon": 8,
        **trainer,
    }
    return run_settings_from_dict({"behaviors": {behavior: cfg}, "env_settings": dict(env_settings or {})})


def dummy_ppo_config(**overrides: Any) -> dict[str, Any]:
    """ML-Agents' dummy PPO (and POCA) behavior config for SimpleEnvironment: lr 5e-3 constant,
    batch 16, buffer 64, 1x32 units, time horizon 64, summary 500, 3000 steps; strict on-policy,
    so that a learning test passes or fails the same way every run.

    Keyword arguments override the keys (``trainer_type="poca"``); ``hyperparameters`` is merged.
    """
    hyper = {"batch_size": 16, "buffer_size": 64, "learning_rate": 5e-3, "learning_rate_schedule": "constant"}
    hyper.update(overrides.pop("hyperparameters", {}))
    return {
        "trainer_type": "ppo",
        "hyperparameters": hyper,
        "network_settings": {"hidden_units": 32, "num_layers": 1},
        "summary_freq": 500,
        "max_steps": 3000,
        "time_horizon": 64,
        "strict_on_policy": True,
        **overrides,
    }


def dummy_ppo_settings(*names: str, run: Mapping[str, Any] | None = None, **overrides: Any) -> RunSettings:
    """A run config with :func:`dummy_ppo_config` for each behavior name; ``run`` adds top-level
    sections (``environment_parameters``, ``env_settings``)."""
    behaviors = {name: dummy_ppo_config(**overrides) for name in names}
    return run_settings_from_dict({"behaviors": behaviors, **dict(run or {})})


def dummy_sac_config(**overrides: Any) -> dict[str, Any]:
    """ML-Agents' dummy SAC behavior config for SimpleEnvironment: lr 5e-3 constant, batch 8,
    buffer_init 100, buffer 5000, tau 0.01, init_entcoef 0.01, 1x16 units, summary 100, 1000 steps.

    Keyword arguments override the keys; ``hyperparameters`` is merged.
    """
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
    return {
        "trainer_type": "sac",
        "hyperparameters": hyper,
        "network_settings": {"hidden_units": 16, "num_layers": 1},
        "summary_freq": 100,
        "max_steps": 1000,
        **overrides,
    }


def dummy_sac_settings(behavior: str, **trainer: Any) -> RunSettings:
    """A run config with :func:`dummy_sac_config` for ``behavior``."""
    return run_settings_from_dict({"behaviors": {behavior: dummy_sac_config(**trainer)}})
