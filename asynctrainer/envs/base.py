"""The protocol every env source implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, StepBatch

__all__ = ["AsyncEnv"]


@runtime_checkable
class AsyncEnv(Protocol):
    """An env the runtime can drive from the event loop.

    ``reset`` and ``step`` return, per behavior, the agents that need a decision and the
    agents whose episode ended. ``step`` receives one :class:`ActionBatch` per behavior for
    exactly the agents of the last ``DecisionSteps``. Blocking work belongs in a thread.
    """

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]: ...

    async def reset(self) -> dict[str, StepBatch]: ...

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]: ...

    async def aclose(self) -> None: ...
