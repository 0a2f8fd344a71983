"""Bounded trajectory channels over anyio memory object streams.

Data flows left → right: ``send, receive = open_trajectory_channel(capacity)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asynctrainer.errors import SettingsError

__all__ = ["ChannelStatistics", "Overflow", "TrajectorySender", "TrajectorySink", "open_trajectory_channel"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
Overflow = Literal["block", "drop_oldest"]


class TrajectorySink(Protocol[T_contra]):
    """Where an env loop sends a behavior's trajectories: a :class:`TrajectorySender`, or what
    routes them further (self-play's team senders)."""

    @property
    def overflow(self) -> Overflow: ...

    async def send(self, item: T_contra) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ChannelStatistics:
    """:ivar buffered: items waiting. :ivar capacity: the bound. :ivar dropped: items lost to ``drop_oldest``."""

    buffered: int
    capacity: int
    dropped: int
    sent: int


class _Evictor(Generic[T]):
    """The one private receive end a ``drop_oldest`` channel's senders share, to evict from the sending side.

    It is closed when the last sender closes, and it does not count as a receiver: once every
    real receive end is closed, sending raises ``anyio.BrokenResourceError`` as for ``block``.
    """

    def __init__(self, receive: MemoryObjectReceiveStream[T]) -> None:
        self.receive = receive
        self.senders = 1

    def check_receiver_open(self, send: MemoryObjectSendStream[T]) -> None:
        if send.statistics().open_receive_streams <= 1:  # only this private end is left
            raise anyio.BrokenResourceError

    def release(self) -> None:
        self.senders -= 1
        if self.senders == 0:
            self.receive.close()


class TrajectorySender(Generic[T]):
    """The send end of a trajectory channel.

    With ``overflow="block"``, ``send`` waits while the channel is full (backpressure: no
    experience is lost). With ``"drop_oldest"`` it never waits: a full channel discards its
    oldest item, and the drop is counted in :meth:`statistics` (of the sender that dropped it).
    Either way, once the receive end is closed, sending raises ``anyio.BrokenResourceError``
    (a ``block`` send waiting for room too).
    """

    def __init__(
        self,
        send: MemoryObjectSendStream[T],
        capacity: int,
        evictor: _Evictor[T] | None = None,
    ) -> None:
        self._send = send
        #: Only ``drop_oldest`` senders have one.
        self._evictor = evictor
        self._closed = False
        self.overflow: Overflow = "block" if evictor is None else "drop_oldest"
        self.capacity = capacity
        self._dropped = 0
        self._sent = 0

    async def send(self, item: T) -> None:
        """Send one item; with ``block`` waits for room. Cancellation loses nothing sent before it."""
        if self._evictor is None:
            await self._send.send(item)
        else:
            await anyio.lowlevel.checkpoint()
            self._send_dropping(item, self._evictor)
        self._sent += 1

    def send_nowait(self, item: T) -> None:
        """Send without waiting; ``block`` raises ``anyio.WouldBlock`` when full."""
        if self._evictor is None:
            self._send.send_nowait(item)
        else:
            self._send_dropping(item, self._evictor)
        self._sent += 1

    def _send_dropping(self, item: T, evictor: _Evictor[T]) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        evictor.check_receiver_open(self._send)
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            evictor.receive.receive_nowait()
            self._dropped += 1
            self._send.send_nowait(item)

    def statistics(self) -> ChannelStatistics:
        stats = self._send.statistics()
        return ChannelStatistics(stats.current_buffer_used, self.capacity, self._dropped, self._sent)

    def clone(self) -> TrajectorySender[T]:
        """Another send end of the same channel (the channel ends when every end is closed)."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._evictor is not None:
            self._evictor.senders += 1
        return TrajectorySender(self._send.clone(), self.capacity, self._evictor)

    def close(self) -> None:
        """Close this end (sync and idempotent); the receiver sees ``EndOfStream`` once all ends close."""
        if self._closed:
            return
        self._closed = True
        self._send.close()
        if self._evictor is not None:
            self._evictor.release()

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
    # Only drop_oldest keeps a receive end of its own: one held by a block sender would keep the
    # channel open after the trainer's end closed, and a full channel would make it wait forever.
    evictor = _Evictor(receive.clone()) if overflow == "drop_oldest" else None
    return TrajectorySender(send, capacity, evictor), receive
