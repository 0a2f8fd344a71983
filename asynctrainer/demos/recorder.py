"""Recording a ``.demo`` file from a running event loop, without stalling it.

:class:`DemoRecorder` encodes each record on the loop (a protobuf message, microseconds) and
appends it to a buffer; the bytes reach the file through ``anyio.open_file`` (a worker thread)
in the background, one write at a time, whenever a write is not already under way. Closing
waits for the last write, appends the trailing meta, rewrites the counts at offset 0, fsyncs,
and renames the file into place, all off the loop. Until then the file is a temporary sibling,
as with :class:`~asynctrainer.demos.writer.DemonstrationWriter`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy.typing as npt

from asynctrainer.demos.writer import DemoEncoder, checked_demo_path
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, StepBatch
from asynctrainer.errors import UsageError
from asynctrainer.files import fsync_dir, temp_sibling

__all__ = ["DemoRecorder", "record_decisions", "record_terminals"]


class DemoRecorder:
    """Stream one behavior's records to a ``.demo`` file from the event loop.

    ``add()`` never blocks; ``await aclose()`` finishes the file. Use it as
    ``async with DemoRecorder(path, spec, "Walker") as recorder: ...``.

    :ivar agents: the agent ids recorded, or None for every agent (read by hosts such as
        :meth:`~asynctrainer.envs.game_session.GameSession.record`).
    """

    def __init__(
        self,
        path: str | Path,
        spec: BehaviorSpec,
        behavior_name: str,
        *,
        agents: Sequence[int] | None = None,
        team: int = 0,
        name: str | None = None,
    ) -> None:
        self.path = checked_demo_path(path)
        self.behavior_name = behavior_name
        self.agents = None if agents is None else frozenset(int(a) for a in agents)
        self.encoder = DemoEncoder(spec, behavior_name, team=team, name=name if name is not None else self.path.stem)
        self._tmp = temp_sibling(self.path)
        self._pending: list[bytes] = [self.encoder.start()]
        self._writer: asyncio.Task[None] | None = None
        self._file: Any = None
        self._closed = False
        self._on_close: list[Callable[[DemoRecorder], None]] = []
        self.bytes_written = 0

    @property
    def number_steps(self) -> int:
        return self.encoder.number_steps

    def wants(self, agent_id: int) -> bool:
        return self.agents is None or agent_id in self.agents

    def on_close(self, callback: Callable[[DemoRecorder], None]) -> None:
        """Call ``callback(self)`` when the recording closes (a host unhooks it there)."""
        self._on_close.append(callback)

    def add(self, agent_id: int, obs: Sequence[npt.ArrayLike], **record: Any) -> None:
        """Record one agent's observation (:meth:`DemoEncoder.record`'s arguments); the write happens later."""
        if self._closed:
            raise UsageError(f"The recording to {self.path} is closed: nothing more can be recorded.")
        self._pending.append(self.encoder.record(agent_id, obs, **record))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Write what is pending, in order, until nothing is (one task at a time)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = await anyio.open_file(self._tmp, "xb")
        while self._pending:
            chunk, self._pending = b"".join(self._pending), []
            await self._file.write(chunk)
            self.bytes_written += len(chunk)

    async def flush(self) -> None:
        """Wait until every record added so far is in the file (not yet durable: :meth:`aclose` makes it so)."""
        if self._writer is not None:
            await self._writer
        if self._pending:
            await self._drain()

    async def aclose(self) -> Path:
        """Finish the file and move it into place; the host stops recording into it."""
        if self._closed:
            return self.path
        self._closed = True
        for callback in self._on_close:
            callback(self)
        with anyio.CancelScope(shield=True):  # what was recorded is kept, also when the host is cancelled
            await self.flush()
            trailer, header = self.encoder.finish()
            file = self._file
            try:
                await file.write(trailer)
                await file.seek(0)
                await file.write(header)
                await file.flush()
                await anyio.to_thread.run_sync(os.fsync, file.wrapped.fileno())
                await file.aclose()
                await anyio.to_thread.run_sync(os.replace, self._tmp, self.path)
                await anyio.to_thread.run_sync(fsync_dir, self.path.parent)
            except BaseException:
                await file.aclose()
                self._tmp.unlink(missing_ok=True)
                raise
        return self.path

    async def __aenter__(self) -> DemoRecorder:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def record_terminals(recorders: Mapping[str, Sequence[DemoRecorder]], batches: Mapping[str, StepBatch]) -> None:
    """Write the episode ends of ``batches`` (one per behavior) to the recorders of each behavior."""
    for name, batch in batches.items():
        terminal = batch.terminal
        for recorder in recorders.get(name, ()):
            for i, agent in enumerate(terminal.agent_id.tolist()):
                if recorder.wants(agent):
                    recorder.add(
                        agent,
                        [o[i] for o in terminal.obs],
                        reward=float(terminal.reward[i]),
                        done=True,
                        interrupted=bool(terminal.interrupted[i]),
                    )


def record_decisions(
    recorders: Mapping[str, Sequence[DemoRecorder]],
    batches: Mapping[str, StepBatch],
    actions: Mapping[str, ActionBatch],
) -> None:
    """Write the decisions of ``batches`` with the ``actions`` chosen for them (a behavior without actions: none)."""
    for name, batch in batches.items():
        chosen = actions.get(name)
        decision = batch.decision
        if chosen is None or len(chosen.agent_id) != len(decision.agent_id):
            continue
        for recorder in recorders.get(name, ()):
            for i, agent in enumerate(decision.agent_id.tolist()):
                if recorder.wants(agent):
                    recorder.add(
                        agent,
                        [o[i] for o in decision.obs],
                        reward=float(decision.reward[i]),
                        continuous=chosen.continuous[i],
                        discrete=chosen.discrete[i],
                        mask=None if decision.action_mask is None else decision.action_mask[i],
                    )
