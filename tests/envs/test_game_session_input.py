"""GameSession under careless input: values checked as the learner sees them, bad calls change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.game_session import GameSession
from asynctrainer.envs.game_session.batcher import MicroBatcher
from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import EnvError, SpecError

SPEC = BehaviorSpec((ObservationSpec((2,)),), ActionSpec.create_discrete((3,)))
OBS = np.zeros(2, np.float32)


async def refused(call: Coroutine[Any, Any, Any], match: str) -> None:
    """``call`` raises SpecError(match) at submit, before it could wait for an env loop."""
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0)  # one loop iteration: the call ran up to its first wait
    assert task.done(), "the call was queued instead of refused"
    with pytest.raises(SpecError, match=match):
        task.result()


def assert_untouched(session: GameSession) -> None:
    assert session.pending == 0 and session.agent_ids == [] and session.stats.episodes_ended == 0


@pytest.mark.parametrize("reward", [1e39, -1e39, 3.5e38])
async def test_a_reward_that_overflows_float32_is_refused(reward: float) -> None:
    session = GameSession({"W": SPEC})
    await refused(session.decide(0, OBS, reward=reward), r"reward of agent 0 of behavior 'W' is .*finite float32")
    await refused(
        session.decide(0, OBS, reward=reward, terminated=True), r"reward of agent 0 of behavior 'W' is .*finite float32"
    )
    await refused(
        session.decide_batch("W", [0, 1], np.zeros((2, 2)), rewards=np.array([0.0, reward])),
        "reward of agent 1 of behavior 'W' is not finite as a float32",
    )
    assert_untouched(session)


async def test_leave_refuses_a_reward_that_overflows_float32_and_keeps_the_agent() -> None:
    session = GameSession({"W": SPEC})
    assert await session.decide(5, OBS, terminated=True) is None  # agent 5 joined
    with pytest.raises(SpecError, match=r"reward of agent 5 of behavior 'W' is 1e\+39"):
        session.leave(5, reward=1e39)
    assert session.agent_ids == [5]
    assert session.leave(5, reward=1.0)


@pytest.mark.parametrize("agent_id", [2**63, -(2**63) - 1, 2**100, np.uint64(2**64 - 1)])
async def test_agent_ids_outside_int64_are_refused_at_submit(agent_id: Any) -> None:
    session = GameSession({"W": SPEC})
    await session.reset()
    await refused(session.decide(agent_id, OBS), "does not fit int64")
    with pytest.raises(SpecError, match="does not fit int64"):
        session.leave(agent_id)
    assert_untouched(session)
    assert not session.closed


@pytest.mark.parametrize(
    "ids",
    [np.array([1, 2**64 - 1], np.uint64), [1, 2**63], np.array([2**63], np.uint64)],
    ids=["uint64 max", "list with 2**63", "uint64 2**63"],
)
async def test_decide_batch_refuses_agent_ids_outside_int64(ids: Any) -> None:
    session = GameSession({"W": SPEC})
    await refused(session.decide_batch("W", ids, np.zeros((len(ids), 2))), "fit int64")
    assert_untouched(session)


async def test_int64_extremes_are_valid_ids() -> None:
    session = GameSession({"W": SPEC})
    await session.reset()
    lo, hi = -(2**63), 2**63 - 1
    waiting = [asyncio.ensure_future(session.decide(i, OBS)) for i in (lo, hi)]
    await asyncio.sleep(0)
    steps = await session.step({})
    assert steps["W"].decision.agent_id.tolist() == [lo, hi]
    await session.aclose()
    await asyncio.gather(*waiting, return_exceptions=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"terminated": np.array([True, False])},
        {"truncated": [True]},
        {"terminated": "yes"},
    ],
    ids=["terminated array", "truncated list", "terminated str"],
)
async def test_a_decide_with_bad_episode_flags_changes_nothing(kwargs: dict[str, Any]) -> None:
    session = GameSession({"W": SPEC})
    await refused(
        session.decide(3, OBS, **kwargs), r"(terminated|truncated) of agent 3 of behavior 'W' must be one bool"
    )
    assert_untouched(session)


async def test_numpy_bool_flags_are_accepted() -> None:
    session = GameSession({"W": SPEC})
    assert await session.decide(3, OBS, terminated=np.bool_(True)) is None
    assert session.stats.episodes_ended == 1


async def test_aclose_fails_decisions_that_a_failed_collect_had_taken_off_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch that cannot be built must not strand the decides it took: aclose() fails them."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("build failed")

    monkeypatch.setattr(MicroBatcher, "_build", broken)
    session = GameSession({"W": SPEC})
    await session.reset()
    waiting = [asyncio.ensure_future(session.decide(i, OBS)) for i in range(3)]
    await asyncio.sleep(0)
    assert session.pending == 3
    with pytest.raises(RuntimeError, match="build failed"):
        await session.step({})
    assert not any(w.done() for w in waiting)
    await session.aclose(reason="the env loop failed")
    await asyncio.sleep(0)  # one loop iteration: the decide() tasks see their answers
    assert all(w.done() for w in waiting), "aclose() answered every decide() it had taken"
    for w in waiting:
        with pytest.raises(EnvError, match=r"closed while agent .*the env loop failed"):
            w.result()
