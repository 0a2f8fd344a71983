from __future__ import annotations

from typing import Any

import pytest

from asynctrainer.settings import RunSettings, run_settings_from_dict


def make_settings(behavior: str = "Counter", **trainer: Any) -> RunSettings:
    """A one-behavior PPO run config with small sizes, overridable per test."""
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
    return run_settings_from_dict({"behaviors": {behavior: cfg}})


@pytest.fixture
def settings_factory() -> Any:
    return make_settings
