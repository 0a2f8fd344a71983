"""Small run configs for tests: one behavior, tiny networks and buffers, overridable per key."""

from __future__ import annotations

from typing import Any

from asynctrainer.settings import RunSettings, run_settings_from_dict

__all__ = ["make_run_settings"]


def make_run_settings(behavior: str = "Counter", **trainer: Any) -> RunSettings:
    """A one-behavior PPO run config with small sizes (32-unit network, buffer of 32, 200 steps).

    Keyword arguments override the behavior's trainer settings; ``hyperparameters`` is merged
    into the defaults rather than replacing them::

        make_run_settings("1D", max_steps=500, hyperparameters={"buffer_size": 64})
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
    return run_settings_from_dict({"behaviors": {behavior: cfg}})
