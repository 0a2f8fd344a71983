from __future__ import annotations

import anyio
import pytest

from asynctrainer.errors import SettingsError
from asynctrainer.runtime.channels import open_trajectory_channel


async def test_block_channel_applies_backpressure_when_full() -> None:
    send, receive = open_trajectory_channel(2)
    await send.send(1)
    await send.send(2)
    with anyio.move_on_after(0.05) as scope:
        await send.send(3)
    assert scope.cancelled_caught, "a full 'block' channel must make the sender wait"
    assert [receive.receive_nowait(), receive.receive_nowait()] == [1, 2]
    assert send.statistics().dropped == 0
    send.close()
    receive.close()


async def test_block_sender_resumes_when_receiver_drains() -> None:
    send, receive = open_trajectory_channel(1)
    got: list[int] = []
    async with anyio.create_task_group() as tg:

        async def consume() -> None:
            async with receive:
                async for item in receive:
                    got.append(item)
                    await anyio.sleep(0.001)

        tg.start_soon(consume)
        for i in range(10):
            await send.send(i)
        send.close()
    assert got == list(range(10))


async def test_drop_oldest_never_waits_and_counts_drops() -> None:
    send, receive = open_trajectory_channel(2, "drop_oldest")
    with anyio.fail_after(1):
        for i in range(5):
            await send.send(i)
    assert send.statistics().dropped == 3
    assert [receive.receive_nowait(), receive.receive_nowait()] == [3, 4]
    send.close()
    receive.close()


async def test_closing_every_send_end_ends_the_stream() -> None:
    send, receive = open_trajectory_channel(4)
    twin = send.clone()
    await send.send(1)
    send.close()
    await twin.send(2)
    twin.close()
    assert [x async for x in receive] == [1, 2]
    with pytest.raises(anyio.EndOfStream):
        await receive.receive()
    receive.close()


def test_bad_capacity_and_overflow_are_rejected() -> None:
    with pytest.raises(SettingsError, match="capacity"):
        open_trajectory_channel(0)
    with pytest.raises(SettingsError, match="drop_oldest"):
        open_trajectory_channel(1, "newest")  # type: ignore[arg-type]


async def test_block_sender_sees_the_receiver_close_when_waiting_for_room() -> None:
    send, receive = open_trajectory_channel(1)
    await send.send(1)
    with anyio.fail_after(5):  # a guard against the hang, not a timing claim
        async with anyio.create_task_group() as tg:

            async def close_receiver() -> None:
                await anyio.wait_all_tasks_blocked()
                receive.close()

            tg.start_soon(close_receiver)
            with pytest.raises(anyio.BrokenResourceError):
                await send.send(2)
    send.close()


async def test_block_sender_fails_at_once_once_the_receiver_is_closed() -> None:
    send, receive = open_trajectory_channel(4)
    receive.close()
    with pytest.raises(anyio.BrokenResourceError):
        await send.send(1)
    with pytest.raises(anyio.BrokenResourceError):
        send.send_nowait(1)
    send.close()


@pytest.mark.parametrize("clones", [0, 2])
async def test_drop_oldest_sender_sees_the_receiver_close(clones: int) -> None:
    send, receive = open_trajectory_channel(2, "drop_oldest")
    senders = [send] + [send.clone() for _ in range(clones)]
    await send.send(1)
    receive.close()
    for s in senders:
        with pytest.raises(anyio.BrokenResourceError):
            await s.send(2)
        with pytest.raises(anyio.BrokenResourceError):
            s.send_nowait(3)
    for s in senders:
        s.close()


async def test_drop_oldest_clones_share_one_channel_until_the_last_closes() -> None:
    send, receive = open_trajectory_channel(2, "drop_oldest")
    twin = send.clone()
    for i in range(3):
        await send.send(i)
    send.close()
    await twin.send(3)
    assert send.statistics().dropped + twin.statistics().dropped == 2
    twin.close()
    assert [x async for x in receive] == [2, 3]
    receive.close()
