"""Bounded trajectory channels over anyio memory object streams (DESIGN §2).

Data flows left → right: ``send, receive = open_trajectory_channel(capacity)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asynctrainer.errors import SettingsError

__all__ = ["ChannelStatistics", "Overflow", "TrajectorySender", "open_trajectory_channel"]

T = TypeVar("T")
Overflow = Literal["block", "drop_oldest"]


@dataclass(frozen=True)
class ChannelStatistics:
    """:ivar buffered: items waiting. :ivar capacity: the bound. :ivar dropped: items lost to ``drop_oldest``."""

    buffered: int
    capacity: int
    dropped: int
    sent: int


class TrajectorySender(Generic[T]):
    """The send end of a trajectory channel.

    With ``overflow="block"``, ``send`` waits while the channel is full (backpressure: no
    experience is lost). With ``"drop_oldest"`` it never waits: a full channel discards its
    oldest item, and the drop is counted in :meth:`statistics`.
    """

    def __init__(
        self,
        send: MemoryObjectSendStream[T],
        receive: MemoryObjectReceiveStream[T],
        overflow: Overflow,
        capacity: int,
    ) -> None:
        self._send = send
        # A private receive end, so that drop_oldest can evict from the sending side.
        self._evict = receive
        self.overflow: Overflow = overflow
        self.capacity = capacity
        self._dropped = 0
        self._sent = 0

    async def send(self, item: T) -> None:
        """Send one item; with ``block`` waits for room. Cancellation loses nothing sent before it."""
        if self.overflow == "block":
            await self._send.send(item)
        else:
            await anyio.lowlevel.checkpoint()
            self._send_dropping(item)
        self._sent += 1

    def send_nowait(self, item: T) -> None:
        """Send without waiting; ``block`` raises ``anyio.WouldBlock`` when full."""
        if self.overflow == "block":
            self._send.send_nowait(item)
        else:
            self._send_dropping(item)
        self._sent += 1

    def _send_dropping(self, item: T) -> None:
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            self._evict.receive_nowait()
            self._dropped += 1
            self._send.send_nowait(item)

    def statistics(self) -> ChannelStatistics:
        stats = self._send.statistics()
        return ChannelStatistics(stats.current_buffer_used, self.capacity, self._dropped, self._sent)

    def clone(self) -> TrajectorySender[T]:
        """Another send end of the same channel (the channel ends when every end is closed)."""
        twin = TrajectorySender(self._send.clone(), self._evict.clone(), self.overflow, self.capacity)
        return twin

    def close(self) -> None:
        """Close this end (sync and idempotent); the receiver sees ``EndOfStream`` once all ends close."""
        self._send.close()
        self._evict.close()

    async def __aenter__(self) -> TrajectorySender[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def open_trajectory_channel(
    capacity: int, overflow: Overflow = "block"
) -> tuple[TrajectorySender[T], MemoryObjectReceiveStream[T]]:
    """Open a bounded channel and return ``(send, receive)``.

    :param capacity: how many items may wait; bounds how far acting can run ahead of learning.
    :param overflow: ``"block"`` (exact training) or ``"drop_oldest"`` (live servers that must never wait).
    :raises SettingsError: for a capacity below 1 or an unknown overflow policy.
    """
    if capacity < 1:
        raise SettingsError(f"Channel capacity must be >= 1, got {capacity}.")
    if overflow not in ("block", "drop_oldest"):
        raise SettingsError(f"Channel overflow must be 'block' or 'drop_oldest', got {overflow!r}.")
    send, receive = anyio.create_memory_object_stream[T](capacity)
    return TrajectorySender(send, receive.clone(), overflow, capacity), receive
