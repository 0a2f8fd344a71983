"""Every YAML config in examples/ loads, and says what its comment promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from asynctrainer import load_run_settings

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
