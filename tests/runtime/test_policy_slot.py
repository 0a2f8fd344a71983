from __future__ import annotations

import anyio
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import UsageError
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.testing.fakes import random_snapshot

SPEC = BehaviorSpec((ObservationSpec((3,)),), ActionSpec.create_discrete((2,)))


def test_latest_wins_and_older_versions_are_ignored() -> None:
    slot = PolicySlot("b")
    with pytest.raises(UsageError, match="'b'"):
        slot.latest()
    for v in (1, 3, 2):
        slot.publish(random_snapshot("b", SPEC, version=v))
    assert slot.latest().version == 3


async def test_wait_newer_returns_only_a_newer_snapshot() -> None:
    slot = PolicySlot("b", random_snapshot("b", SPEC, version=0))
    assert (await slot.wait_newer(-1)).version == 0
    results: list[int] = []

    async def waiter() -> None:
        results.append((await slot.wait_newer(0)).version)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.01)
        assert results == []
        slot.publish(random_snapshot("b", SPEC, version=2))
    assert results == [2]


def test_snapshot_arrays_are_read_only() -> None:
    snap = random_snapshot("b", SPEC)
    with pytest.raises(ValueError):
        snap.hidden[0].kernel[0, 0] = 1.0
