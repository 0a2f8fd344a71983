"""GameSession under careless input: values checked as the learner sees them, bad calls change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.game_session import GameSession
from asynctrainer.envs.game_session.batcher import MicroBatcher
from asynctrainer.envs.spec import ActionBatch, ActionSpec, BehaviorSpec, ObservationSpec
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


async def test_aclose_fails_decisions_whose_actions_the_session_refused() -> None:
    """step() with actions that do not fit its batch raises; the decides of that batch are not stranded."""
    session = GameSession({"W": SPEC})
    await session.reset()
    waiting = asyncio.ensure_future(session.decide(7, OBS))
    await asyncio.sleep(0)
    steps = await session.step({})
    ids = steps["W"].decision.agent_id
    wrong = ActionBatch(np.zeros((1, 0), np.float32), np.zeros((2, 1), np.int32), ids)
    with pytest.raises(SpecError, match="do not match its 1 deciding agents"):
        await session.step({"W": wrong})
    assert not waiting.done()
    await session.aclose(reason="the env loop failed")
    await asyncio.sleep(0)
    assert waiting.done(), "aclose() answered the decide() whose actions were refused"
    with pytest.raises(EnvError, match=r"closed while agent 7 .*the env loop failed"):
        waiting.result()


async def test_actions_refused_for_one_behavior_answer_no_decision_of_another() -> None:
    """A step() whose actions are refused answers nothing: the same batch can still be answered."""
    other = BehaviorSpec((ObservationSpec((1,)),), ActionSpec.create_continuous(1))
    session = GameSession({"W": SPEC, "C": other})
    await session.reset()
    w = asyncio.ensure_future(session.decide(1, OBS, behavior="W"))
    c = asyncio.ensure_future(session.decide(2, [0.5], behavior="C"))
    await asyncio.sleep(0)
    steps = await session.step({})
    good_w = ActionBatch(np.zeros((1, 0), np.float32), np.ones((1, 1), np.int32), steps["W"].decision.agent_id)
    bad_c = ActionBatch(np.zeros((1, 3), np.float32), np.zeros((1, 0), np.int32), steps["C"].decision.agent_id)
    with pytest.raises(SpecError, match="behavior 'C'"):
        await session.step({"W": good_w, "C": bad_c})
    await asyncio.sleep(0)
    assert not w.done() and not c.done(), "nothing was answered by the refused step()"
    good_c = ActionBatch(np.full((1, 1), 0.25, np.float32), np.zeros((1, 0), np.int32), steps["C"].decision.agent_id)
    next_step = asyncio.ensure_future(session.step({"W": good_w, "C": good_c}))
    action_w, action_c = await w, await c
    assert action_w is not None and action_w.discrete.tolist() == [1]
    assert action_c is not None and action_c.continuous.tolist() == [0.25]
    await session.aclose()
    with pytest.raises(EnvError):
        await next_step


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"behavior": ["W"]}, r"agent 1 names behavior \['W'\], which is not a str; known behaviors: \['W'\]"),
        ({"action_mask": [[True], [True, False]]}, r"the action mask of agent 1 of behavior 'W' is not an array"),
        ({"action_mask": [0.5, 0, 0]}, r"the action mask of agent 1 of behavior 'W' has dtype float64; give bools"),
        ({"reward": "1.5"}, r"the reward of agent 1 of behavior 'W' is not a number: '1.5'"),
        ({"reward": True}, r"the reward of agent 1 of behavior 'W' is not a number: True"),
    ],
    ids=["behavior list", "ragged mask", "float mask", "reward str", "reward bool"],
)
async def test_careless_arguments_are_a_spec_error_and_change_nothing(kwargs: dict[str, Any], match: str) -> None:
    session = GameSession({"W": SPEC})
    await refused(session.decide(1, OBS, **kwargs), match)
    assert_untouched(session)


async def test_decide_batch_with_a_behavior_that_is_not_a_str_is_refused() -> None:
    session = GameSession({"W": SPEC})
    await refused(session.decide_batch({"W"}, [1], np.zeros((1, 2))), r"decide_batch\(\) names behavior \{'W'\}")  # type: ignore[arg-type]
    assert_untouched(session)


async def test_leave_refuses_bad_input_and_keeps_the_agent() -> None:
    session = GameSession({"W": SPEC})
    assert await session.decide(4, OBS, terminated=True) is None
    with pytest.raises(SpecError, match=r"agent ids are ints, got str '4'"):
        session.leave("4")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"the observation of agent 4 of behavior 'W' has shape \(3,\)"):
        session.leave(4, obs=np.zeros(3))
    with pytest.raises(SpecError, match="reward of agent 4 of behavior 'W' is not a number"):
        session.leave(4, reward="x")  # type: ignore[arg-type]
    assert session.agent_ids == [4]
    assert session.leave(4)
