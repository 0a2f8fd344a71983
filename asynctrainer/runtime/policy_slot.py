"""Latest-wins holder of one behavior's newest policy snapshot."""

from __future__ import annotations

import anyio

from asynctrainer.errors import UsageError
from asynctrainer.runtime.snapshot import PolicySnapshot

__all__ = ["PolicySlot"]


class PolicySlot:
    """Holds the newest :class:`PolicySnapshot` of one behavior.

    ``publish`` replaces the held snapshot (latest wins; nothing queues), ``latest`` reads
    it without waiting and ``wait_newer`` waits until a newer version is published. ``load``
    puts in any snapshot, an older one too (self-play's frozen opponents).
    """

    def __init__(self, behavior_name: str, initial: PolicySnapshot | None = None) -> None:
        self.behavior_name = behavior_name
        self._snapshot = initial
        self._changed = anyio.Event()
        self.published = 0 if initial is None else 1
        self.closed = False
        #: How many times :meth:`load` replaced the snapshot.
        self.loads = 0

    def publish(self, snapshot: PolicySnapshot) -> None:
        """Make ``snapshot`` the newest; an older or equal version than the held one is ignored."""
        if self._snapshot is not None and snapshot.version <= self._snapshot.version:
            return
        self._snapshot = snapshot
        self.published += 1
        self._wake()

    def load(self, snapshot: PolicySnapshot) -> None:
        """Hold ``snapshot`` whatever its version: a newer one is published, an older one (a
        frozen opponent's) replaces the held one and ends every ``wait_newer`` in progress."""
        if self._snapshot is not None and snapshot.version > self._snapshot.version:
            self.publish(snapshot)
            return
        self._snapshot = snapshot
        self.loads += 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def close(self) -> None:
        """Say no newer snapshot will come (the trainer finished); wakes ``wait_newer`` callers."""
        self.closed = True
        self._changed.set()

    def latest(self) -> PolicySnapshot:
        """The newest snapshot, without waiting.

        :raises UsageError: when nothing was published yet.
        """
        if self._snapshot is None:
            raise UsageError(
                f"No policy was published yet for behavior '{self.behavior_name}': publish a snapshot "
                "(or give the slot an initial one) before reading it, or await wait_newer(-1)."
            )
        return self._snapshot

    @property
    def version(self) -> int:
        return -1 if self._snapshot is None else self._snapshot.version

    async def wait_newer(self, version: int) -> PolicySnapshot:
        """Wait until a snapshot with a version above ``version`` is held, and return it.

        Returns the held snapshot without waiting once the slot is closed, and as soon as
        :meth:`load` replaced it (with an older one: the wait is for a version that may never
        come to this slot). Cancellation simply stops the wait.
        """
        loads = self.loads
        while not self.closed and self.loads == loads and (self._snapshot is None or self._snapshot.version <= version):
            await self._changed.wait()
        return self.latest()
