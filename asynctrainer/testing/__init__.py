"""Test helpers: ML-Agents' SimpleEnvironment, fake trainers and envs, small configs, and pytest fixtures.

The fixtures (``run_settings``, ``simple_env``, ``fake_trainer_factory``, ``runner``) come with the
package as the pytest plugin ``asynctrainer`` (``asynctrainer.testing.pytest_plugin``).
"""

from __future__ import annotations

from asynctrainer.testing.expert import expert_actions, record_simple_expert
from asynctrainer.testing.fakes import CountingEnv, FakeTrainer, fake_trainer_factory, random_snapshot
from asynctrainer.testing.settings import make_run_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

__all__ = [
    "CountingEnv",
    "FakeTrainer",
    "SimpleEnvironment",
    "expert_actions",
    "fake_trainer_factory",
    "make_run_settings",
    "random_snapshot",
    "record_simple_expert",
]
