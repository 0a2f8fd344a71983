"""The fixtures the package ships as a pytest plugin, used as a user's test would use them."""

from __future__ import annotations

import anyio
import pytest

from asynctrainer import Runner, RunSettings
from asynctrainer.testing import SimpleEnvironment

pytest_plugins: list[str] = []  # the fixtures below come from the installed plugin, not from a conftest.py


def test_the_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("asynctrainer")


def test_run_settings_and_simple_env_fit_each_other(run_settings: RunSettings, simple_env: SimpleEnvironment) -> None:
    assert list(simple_env.behavior_specs) == ["1D"]
    assert run_settings.trainer_settings_for("1D").trainer_type == "ppo"


async def test_a_user_test_with_the_runner_fixture(runner: Runner) -> None:
    # What README's "Testing your own code" shows: the Runner trains in the background of the
    # test's loop while the test does its own work; fake trainers publish new snapshots.
    slot = runner.slots["1D"]
    version = slot.version
    with anyio.fail_after(30):
        await slot.wait_newer(version)
    assert runner.trainers["1D"].update_count >= 1
    assert runner.env_stats.env_steps > 0


async def test_the_fake_trainer_factory_records_what_it_built(
    run_settings: RunSettings, simple_env: SimpleEnvironment, fake_trainer_factory: object
) -> None:
    async with Runner(run_settings, simple_env, trainer_factory=fake_trainer_factory, stats_writers=[]) as runner:  # type: ignore[arg-type]
        await runner.slots["1D"].wait_newer(0)
    assert [t.behavior_name for t in fake_trainer_factory.made] == ["1D"]  # type: ignore[attr-defined]
