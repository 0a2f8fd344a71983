"""Test helpers: ML-Agents' SimpleEnvironment, fake trainers and envs, small configs, and pytest fixtures.

The fixtures (``run_settings``, ``simple_env``, ``fake_trainer_factory``, ``runner``) come with the
package as the pytest plugin ``asynctrainer`` (``asynctrainer.testing.pytest_plugin``). Names are
imported on first use, so ``asynctrainer.testing.simple_env`` alone pulls in numpy and the env specs only.
"""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CountingEnv": "asynctrainer.testing.fakes",
    "FakeTrainer": "asynctrainer.testing.fakes",
    "SimpleEnvironment": "asynctrainer.testing.simple_env",
    "expert_actions": "asynctrainer.testing.expert",
    "fake_trainer_factory": "asynctrainer.testing.fakes",
    "make_run_settings": "asynctrainer.testing.settings",
    "random_snapshot": "asynctrainer.testing.fakes",
    "record_simple_expert": "asynctrainer.testing.expert",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
