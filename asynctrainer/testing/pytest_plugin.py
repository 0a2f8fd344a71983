"""pytest fixtures for testing code that embeds asynctrainer (registered as the ``asynctrainer`` pytest plugin).

Installed with the package, so a user's tests get them without a ``conftest.py``:

- ``run_settings``: a small one-behavior PPO config for SimpleEnvironment's ``1D`` behavior;
- ``simple_env``: ML-Agents' SimpleEnvironment (1-D, one discrete branch, 4 agents);
- ``fake_trainer_factory``: a trainer factory whose trainers "update" without TensorFlow
  (``.made`` lists the trainers it built);
- ``runner``: a Runner training ``simple_env`` with those fake trainers, started on the test's
  loop and stopped cleanly after the test (needs pytest-asyncio).

Nothing here imports TensorFlow, so a test using them runs in milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from asynctrainer.settings import RunSettings
from asynctrainer.testing import fakes
from asynctrainer.testing.settings import make_run_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

__all__ = ["fake_trainer_factory", "run_settings", "runner", "simple_env"]


@pytest.fixture
def run_settings() -> RunSettings:
    """A small PPO config for the behavior ``1D`` (``max_steps`` 10⁶: the ``runner`` fixture runs until stopped)."""
    return make_run_settings("1D", max_steps=1_000_000)


@pytest.fixture
def simple_env() -> SimpleEnvironment:
    return SimpleEnvironment("1D", num_agents=4, seed=0)


@pytest.fixture
def fake_trainer_factory() -> Callable[..., fakes.FakeTrainer]:
    return fakes.fake_trainer_factory()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - without pytest-asyncio there is no loop to run a Runner on
    pass
else:

    @pytest_asyncio.fixture
    async def runner(
        run_settings: RunSettings, simple_env: SimpleEnvironment, fake_trainer_factory: Any
    ) -> AsyncIterator[Any]:
        """A Runner training ``simple_env`` in the background of the test's loop; stopped after the test.

        The fixture yields once the Runner is set up and its env loop runs (trainers built,
        first snapshots published). A failure of the run surfaces at teardown.
        """
        import asyncio

        from asynctrainer.app import Runner

        running = Runner(run_settings, simple_env, trainer_factory=fake_trainer_factory, stats_writers=[])
        # A task of its own: pytest-asyncio may set up and tear down a fixture in different tasks,
        # and the Runner's task group must be entered and left in one.
        task = asyncio.ensure_future(running.run())
        started = asyncio.ensure_future(running.wait_started())
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            task.result()  # raises the set-up error
        try:
            yield running
        finally:
            running.stop()
            await task
