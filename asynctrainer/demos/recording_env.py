"""Any :class:`~asynctrainer.envs.base.AsyncEnv`, recorded: every decision with its action, every episode end.

``asynctrainer-learn --record-demo PATH`` wraps the run's env in a :class:`RecordingEnv`, so the
policy playing it (trained, or being trained) is recorded to Unity's ``.demo`` format, one file
per behavior, with the same mechanism a :class:`~asynctrainer.envs.game_session.GameSession`
records with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asynctrainer.demos.recorder import DemoRecorder, record_decisions, record_terminals
from asynctrainer.envs.base import AsyncEnv
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, StepBatch

__all__ = ["RecordingEnv"]


class RecordingEnv:
    """Wraps ``env`` and records its behaviors: ``paths`` maps an env behavior to a ``.demo`` path.

    :param names: the behavior name to write into each file (default: the env's key).
    """

    def __init__(self, env: AsyncEnv, paths: Mapping[str, str | Path], names: Mapping[str, str] | None = None) -> None:
        self.env = env
        specs = env.behavior_specs
        self.recorders = {
            key: [DemoRecorder(path, specs[key], (names or {}).get(key, key))] for key, path in paths.items()
        }
        self._last: dict[str, StepBatch] = {}

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self.env.behavior_specs

    def __getattr__(self, name: str) -> Any:  # the wrapped env's other attributes (e.g. a gymnasium env's)
        return getattr(self.env, name)

    def _seen(self, batches: dict[str, StepBatch]) -> dict[str, StepBatch]:
        record_terminals(self.recorders, batches)
        self._last = batches
        return batches

    async def reset(self) -> dict[str, StepBatch]:
        return self._seen(await self.env.reset())

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        record_decisions(self.recorders, self._last, actions)
        self._last = {}
        return self._seen(await self.env.step(actions))

    async def aclose(self) -> None:
        """Finish every file (what was recorded is kept), then close the env."""
        try:
            for recorders in self.recorders.values():
                for recorder in recorders:
                    await recorder.aclose()
        finally:
            await self.env.aclose()
