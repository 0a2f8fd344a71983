"""GameSession: ordering, micro-batching, leaves, validation, and a Runner with fake trainers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.envs.base import AsyncEnv
from asynctrainer.envs.game_session import AgentAction, GameSession
from asynctrainer.envs.spec import ActionBatch, ActionSpec, BehaviorSpec, DecisionSteps, ObservationSpec, StepBatch
from asynctrainer.errors import EnvError, SpecError
from asynctrainer.testing import make_run_settings
from asynctrainer.testing.fakes import fake_trainer_factory
from asynctrainer.testing.game_clients import CrashingEnv

#: obs = [discrete action wanted, continuous action wanted]; the echo policy returns exactly that.
ECHO = BehaviorSpec((ObservationSpec((2,)),), ActionSpec(1, (8,)))
COUNTER = BehaviorSpec((ObservationSpec((1,)),), ActionSpec.create_discrete((2,)))


def echo(decision: DecisionSteps) -> ActionBatch:
    obs = decision.obs[0]
    return ActionBatch(obs[:, 1:2].copy(), obs[:, 0:1].astype(np.int32), decision.agent_id)


class Driver:
    """Plays the Runner's env loop: reset once, then step with one ActionBatch per behavior."""

    def __init__(self, session: GameSession, policy: Callable[[DecisionSteps], ActionBatch] = echo) -> None:
        self.session = session
        self.policy = policy
        self.batches: list[dict[str, StepBatch]] = []
        self.task: asyncio.Task[None] | None = None
        self._new_batch = asyncio.Event()

    async def _run(self) -> None:
        steps = await self.session.reset()
        while True:
            self.batches.append(steps)
            self._new_batch.set()
            actions = {name: self.policy(b.decision) for name, b in steps.items() if len(b.decision)}
            steps = await self.session.step(actions)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait for the batches that make ``condition`` true (an error, not a hang, if none comes)."""
        while not condition():
            self._new_batch.clear()
            await asyncio.wait_for(self._new_batch.wait(), 5)

    def start(self) -> Driver:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    def decision_sizes(self, name: str = "Echo") -> list[int]:
        return [len(b[name].decision) for b in self.batches if name in b and len(b[name].decision)]

    def terminals(self, name: str = "Echo") -> list[tuple[int, float, bool, np.ndarray]]:
        out = []
        for b in self.batches:
            if name in b:
                t = b[name].terminal
                for i in range(len(t)):
                    out.append((int(t.agent_id[i]), float(t.reward[i]), bool(t.interrupted[i]), t.obs[0][i]))
        return out


def obs_for(agent: int, k: int) -> np.ndarray:
    return np.array([(agent + k) % 8, agent / 100.0], np.float32)


async def test_session_is_an_async_env_and_reset_does_not_wait() -> None:
    session = GameSession({"Echo": ECHO})
    assert isinstance(session, AsyncEnv)
    with_timeout = await asyncio.wait_for(session.reset(), 1.0)
    assert with_timeout == {}


async def test_actions_go_back_to_the_agents_that_asked() -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()

    async def agent(i: int) -> None:
        for k in range(10):
            action = await session.decide(i, obs_for(i, k), reward=1.0)
            assert isinstance(action, AgentAction)
            assert action.discrete.tolist() == [(i + k) % 8]
            np.testing.assert_allclose(action.continuous, [i / 100.0], rtol=1e-6)
            await asyncio.sleep(0.0005 * (i % 3))  # agents drift apart

    await asyncio.wait_for(asyncio.gather(*(agent(i) for i in range(20))), 10)
    await driver.stop()
    assert session.stats.decisions == 200
    assert sum(driver.decision_sizes()) == 200


async def test_concurrent_decides_land_in_one_step() -> None:
    session = GameSession({"Echo": ECHO}, max_wait_ms=1.0)
    driver = Driver(session).start()
    actions = await asyncio.wait_for(asyncio.gather(*(session.decide(i, obs_for(i, 0)) for i in range(32))), 5)
    await driver.stop()
    assert [a.discrete[0] for a in actions if a is not None] == [i % 8 for i in range(32)]
    assert driver.decision_sizes() == [32]
    assert session.stats.batches == 1 and session.stats.largest_batch == 32


class FakeClock:
    """Freezes the running loop's clock; timers fire only when the test advances it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()
        self.loop.time = lambda: self.now  # type: ignore[method-assign]

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def restore(self) -> None:
        del self.loop.time


async def yield_to_loop(times: int = 10) -> None:
    """Let every ready task run a few rounds (no time passes on a frozen clock)."""
    for _ in range(times):
        await asyncio.sleep(0)


async def test_a_batch_waits_up_to_max_wait_for_known_agents_then_closes() -> None:
    session = GameSession({"Echo": ECHO}, max_wait_ms=80.0)
    driver = Driver(session).start()
    # Three agents join; in the next round only two of them decide.
    await asyncio.gather(*(session.decide(i, obs_for(i, 0)) for i in range(3)))
    clock = FakeClock()
    try:
        first = asyncio.ensure_future(session.decide(0, obs_for(0, 1)))
        await yield_to_loop()
        clock.advance(0.079)
        await yield_to_loop()
        assert session.pending == 1 and not first.done(), "agent 1 and 2 are known: the batch waits for them"
        second = asyncio.ensure_future(session.decide(1, obs_for(1, 1)))
        await yield_to_loop()
        assert session.pending == 2 and driver.decision_sizes() == [3], "still waiting for agent 2"
        clock.advance(0.002)  # max_wait_ms after the first decide arrived
        await yield_to_loop()
        assert first.done() and second.done()
        assert driver.decision_sizes() == [3, 2], "decides within max_wait_ms share one step"
        # When every known agent has decided, the batch closes at once: no time passes.
        third = asyncio.ensure_future(asyncio.gather(*(session.decide(i, obs_for(i, 2)) for i in range(3))))
        await yield_to_loop()
        assert third.done() and all(a is not None for a in third.result())
    finally:
        clock.restore()
    await driver.stop()
    assert driver.decision_sizes() == [3, 2, 3]


async def test_max_batch_splits_a_burst_into_several_steps() -> None:
    session = GameSession({"Echo": ECHO}, max_batch=4, max_wait_ms=5.0)
    driver = Driver(session).start()
    actions = await asyncio.wait_for(asyncio.gather(*(session.decide(i, obs_for(i, 0)) for i in range(10))), 5)
    await driver.stop()
    assert [a.discrete[0] for a in actions if a is not None] == [i % 8 for i in range(10)]
    assert driver.decision_sizes() == [4, 4, 2]


async def test_decide_batch_returns_aligned_actions_and_reports_episode_ends() -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    ids = np.array([10, 11, 12, 13])
    obs = np.stack([obs_for(int(i), 0) for i in ids])
    first = await asyncio.wait_for(session.decide_batch("Echo", ids, obs), 5)
    assert first.agent_id.tolist() == ids.tolist()
    assert first.discrete[:, 0].tolist() == [int(o) for o in obs[:, 0]]
    rewards = np.array([0.5, 1.0, -1.0, 0.0], np.float32)
    second = await asyncio.wait_for(
        session.decide_batch(
            "Echo", ids, obs + np.array([1, 0]), rewards, terminated=[False, True, False, False], truncated=[0, 0, 1, 0]
        ),
        5,
    )
    await driver.stop()
    # Ended rows get zeros; the others their actions, in the caller's order.
    assert second.discrete[:, 0].tolist() == [(10 + 1) % 8, 0, 0, (13 + 1) % 8]
    terminals = {aid: (reward, interrupted) for aid, reward, interrupted, _ in driver.terminals()}
    assert terminals == {11: (1.0, False), 12: (-1.0, True)}
    last = driver.batches[-1]["Echo"].decision
    assert last.agent_id.tolist() == [10, 13]
    np.testing.assert_allclose(last.reward, [0.5, 0.0])


async def test_leave_right_after_a_terminal_ends_no_second_episode() -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    await session.decide(1, obs_for(1, 0))
    await session.decide(2, obs_for(2, 0))
    assert await session.decide(1, obs_for(1, 1), reward=1.0, terminated=True) is None
    assert session.leave(1), "the agent is still known after its episode ended"
    await asyncio.wait_for(session.decide(2, obs_for(2, 1)), 5)
    await driver.stop()
    [(agent, reward, interrupted, _)] = driver.terminals()
    assert (agent, reward, interrupted) == (1, 1.0, False), "only the real terminal; the leave adds none"
    assert session.stats.leaves == 0 and session.stats.episodes_ended == 1
    assert session.agent_ids == [2]


async def test_terminated_and_truncated_decides_return_none_and_end_the_episode() -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    assert await session.decide(1, obs_for(1, 0)) is not None
    assert await session.decide(2, obs_for(2, 0)) is not None
    assert await session.decide(1, obs_for(1, 1), reward=2.0, terminated=True) is None
    assert await session.decide(2, obs_for(2, 1), reward=3.0, truncated=True) is None
    # The next decide starts a new episode: terminal and first decision may share a step.
    await asyncio.wait_for(asyncio.gather(session.decide(1, obs_for(1, 2)), session.decide(2, obs_for(2, 2))), 5)
    await driver.stop()
    ends = {aid: (reward, interrupted, o.tolist()) for aid, reward, interrupted, o in driver.terminals()}
    assert ends == {1: (2.0, False, obs_for(1, 1).tolist()), 2: (3.0, True, obs_for(2, 1).tolist())}
    assert session.stats.episodes_ended == 2


async def test_leave_after_acting_reports_an_interrupted_terminal_with_the_last_obs() -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    await session.decide(5, obs_for(5, 0))
    await session.decide(6, obs_for(6, 0))
    await session.decide(5, obs_for(5, 1), reward=0.25)
    assert session.leave(5)
    assert not session.leave(5), "leaving twice is harmless"
    await asyncio.wait_for(session.decide(6, obs_for(6, 1)), 5)
    await driver.until(lambda: bool(driver.terminals()))
    await driver.stop()
    [(agent, reward, interrupted, last)] = driver.terminals()
    assert (agent, reward, interrupted) == (5, 0.0, True)
    np.testing.assert_array_equal(last, obs_for(5, 1))
    assert session.agent_ids == [6]
    assert session.stats.leaves == 1


async def test_leave_with_the_outcome_of_the_last_action() -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    await session.decide(5, obs_for(5, 0))
    session.leave(5, obs=obs_for(5, 3), reward=-1.0)
    await driver.until(lambda: bool(driver.terminals()))
    await driver.stop()
    [(agent, reward, interrupted, last)] = driver.terminals()
    assert (agent, reward, interrupted) == (5, -1.0, True)
    np.testing.assert_array_equal(last, obs_for(5, 3))


async def test_leave_while_queued_turns_the_queued_obs_into_the_terminal_row() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    waiting = asyncio.ensure_future(session.decide(7, obs_for(7, 4), reward=0.5))
    await asyncio.sleep(0)
    assert session.pending == 1
    session.leave(7)
    assert await asyncio.wait_for(waiting, 1) is None
    steps = await asyncio.wait_for(session.step({}), 1)
    batch = steps["Echo"]
    assert len(batch.decision) == 0
    assert batch.terminal.agent_id.tolist() == [7]
    assert batch.terminal.interrupted.tolist() == [True]
    assert batch.terminal.reward.tolist() == [0.5]
    np.testing.assert_array_equal(batch.terminal.obs[0][0], obs_for(7, 4))


async def test_leave_while_in_flight_returns_none_and_discards_the_action() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    waiting = [asyncio.ensure_future(session.decide(i, obs_for(i, 0))) for i in (1, 2)]
    steps = await asyncio.wait_for(session.step({}), 1)
    decision = steps["Echo"].decision
    assert decision.agent_id.tolist() == [1, 2]
    session.leave(1)  # after the env loop collected it, before the actions came back
    assert await waiting[0] is None
    next_steps = asyncio.ensure_future(session.step({"Echo": echo(decision)}))
    action = await asyncio.wait_for(waiting[1], 1)
    assert action is not None and action.discrete.tolist() == [2]
    after = (await asyncio.wait_for(next_steps, 1))["Echo"]
    assert after.terminal.agent_id.tolist() == [1] and after.terminal.interrupted.tolist() == [True]


async def test_several_behaviors_share_a_step() -> None:
    session = GameSession({"Echo": ECHO, "Counter": COUNTER})

    def policy(decision: DecisionSteps) -> ActionBatch:
        if decision.obs[0].shape[1] == 2:
            return echo(decision)
        return ActionBatch(np.zeros((len(decision), 0), np.float32), np.ones((len(decision), 1), np.int32),
                           decision.agent_id)  # fmt: skip

    driver = Driver(session, policy).start()
    a, b = await asyncio.wait_for(
        asyncio.gather(session.decide(1, obs_for(1, 2), behavior="Echo"), session.decide(2, [0.0], behavior="Counter")),
        5,
    )
    await driver.stop()
    assert a is not None and a.discrete.tolist() == [3] and a.continuous.shape == (1,)
    assert b is not None and b.discrete.tolist() == [1] and b.continuous.shape == (0,)
    assert set(driver.batches[-1]) == {"Echo", "Counter"}


async def test_action_masks_reach_the_env_loop_true_means_forbidden() -> None:
    session = GameSession({"Counter": COUNTER})
    await session.reset()
    waiting = [
        asyncio.ensure_future(session.decide(1, [0.0], action_mask=[True, False])),
        asyncio.ensure_future(session.decide(2, [0.0])),
    ]
    steps = await asyncio.wait_for(session.step({}), 1)
    mask = steps["Counter"].decision.action_mask
    assert mask is not None and mask.tolist() == [[True, False], [False, False]]
    await session.aclose()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_the_learner_keeps_its_copy_when_the_host_reuses_its_buffer() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    buffer = obs_for(1, 0)
    waiting = asyncio.ensure_future(session.decide(1, buffer))
    await asyncio.sleep(0)  # decide() ran: the observation is queued
    buffer[:] = 99.0
    steps = await asyncio.wait_for(session.step({}), 1)
    np.testing.assert_array_equal(steps["Echo"].decision.obs[0][0], obs_for(1, 0))
    await session.aclose()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_casts_ints_and_float64_to_float32() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    waiting = [
        asyncio.ensure_future(session.decide(np.int64(1), [3, 1])),
        asyncio.ensure_future(session.decide(2, np.array([1.5, 2.5], np.float64))),
    ]
    steps = await asyncio.wait_for(session.step({}), 1)
    obs = steps["Echo"].decision.obs[0]
    assert obs.dtype == np.float32 and obs.tolist() == [[3.0, 1.0], [1.5, 2.5]]
    await session.aclose()
    await asyncio.gather(*waiting, return_exceptions=True)


BAD_DECIDES: list[tuple[str, dict[str, Any], str]] = [
    ("wrong shape", {"obs": [1.0, 2.0, 3.0]}, r"agent 3 of behavior 'Echo' has shape \(3,\), expected \(2,\)"),
    ("string dtype", {"obs": ["a", "b"]}, r"agent 3 of behavior 'Echo' has dtype <U1, which cannot be cast"),
    ("object dtype", {"obs": np.array([None, 1.0], dtype=object)}, "cannot be cast to float32"),
    ("NaN", {"obs": [np.nan, 0.0]}, r"agent 3 of behavior 'Echo' contains NaN or infinite"),
    ("inf", {"obs": [0.0, np.inf]}, r"agent 3 of behavior 'Echo' contains NaN or infinite"),
    ("NaN reward", {"reward": float("nan")}, r"reward of agent 3 of behavior 'Echo' is nan"),
    (
        "unknown behavior",
        {"behavior": "Walker"},
        r"agent 3 names unknown behavior 'Walker'; known behaviors: \['Echo'\]",
    ),
    ("bad agent id", {"agent_id": "three"}, "agent ids are ints, got str 'three'"),
    ("bool agent id", {"agent_id": True}, "agent ids are ints, got True"),
]


@pytest.mark.parametrize(("kwargs", "message"), [b[1:] for b in BAD_DECIDES], ids=[b[0] for b in BAD_DECIDES])
async def test_bad_decides_raise_spec_errors_naming_agent_and_behavior(kwargs: dict[str, Any], message: str) -> None:
    session = GameSession({"Echo": ECHO})
    call = {"agent_id": 3, "obs": [1.0, 0.0], **kwargs}
    with pytest.raises(SpecError, match=message):
        await session.decide(call.pop("agent_id"), call.pop("obs"), **call)
    assert session.pending == 0 and session.agent_ids == []


async def test_a_second_decide_while_one_is_pending_is_refused() -> None:
    session = GameSession({"Echo": ECHO})
    first = asyncio.ensure_future(session.decide(3, [1.0, 0.0]))
    await asyncio.sleep(0)
    with pytest.raises(SpecError, match=r"agent 3 of behavior 'Echo' already has a pending decision"):
        await session.decide(3, [1.0, 0.0])
    with pytest.raises(SpecError, match="already has a pending decision"):
        await session.decide(3, [1.0, 0.0], terminated=True)
    with pytest.raises(SpecError, match="agent 3 of behavior 'Echo' already has a pending decision"):
        await session.decide_batch("Echo", [4, 3], np.zeros((2, 2)))
    assert session.pending == 1
    await session.aclose()
    with pytest.raises(EnvError):
        await first


async def test_a_decide_given_up_while_queued_is_replaced_and_its_reward_carried_over() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    first = asyncio.ensure_future(session.decide(1, obs_for(1, 0), reward=0.5))
    await asyncio.sleep(0)
    first.cancel()  # e.g. asyncio.wait_for timed out in the host's tick
    await asyncio.gather(first, return_exceptions=True)
    second = asyncio.ensure_future(session.decide(1, obs_for(1, 1), reward=0.25))
    await asyncio.sleep(0)
    assert session.pending == 1
    steps = await asyncio.wait_for(session.step({}), 1)
    decision = steps["Echo"].decision
    assert decision.agent_id.tolist() == [1] and decision.reward.tolist() == [0.75]
    np.testing.assert_array_equal(decision.obs[0][0], obs_for(1, 1))
    await session.aclose()
    await asyncio.gather(second, return_exceptions=True)


async def test_a_decide_given_up_while_in_flight_is_replaced_and_its_action_discarded() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    first = asyncio.ensure_future(session.decide(1, obs_for(1, 0)))
    steps = await asyncio.wait_for(session.step({}), 1)  # the env loop has it now
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    second = asyncio.ensure_future(session.decide(1, obs_for(1, 5)))
    await asyncio.sleep(0)
    following = await asyncio.wait_for(session.step({"Echo": echo(steps["Echo"].decision)}), 1)
    assert not second.done()
    assert following["Echo"].decision.agent_id.tolist() == [1]
    stepping = asyncio.ensure_future(session.step({"Echo": echo(following["Echo"].decision)}))
    action = await asyncio.wait_for(second, 1)
    assert action is not None and action.discrete.tolist() == [6]
    await session.aclose()
    await asyncio.gather(stepping, return_exceptions=True)


async def test_behavior_is_required_with_several_and_is_fixed_per_agent() -> None:
    session = GameSession({"Echo": ECHO, "Counter": COUNTER})
    with pytest.raises(
        SpecError, match=r"agent 1 gave no behavior, and the session has several: \['Counter', 'Echo'\]"
    ):
        await session.decide(1, [1.0, 0.0])
    await session.decide(1, [1.0, 0.0], terminated=True, behavior="Echo")
    with pytest.raises(SpecError, match="agent 1 belongs to behavior 'Echo', not 'Counter'"):
        await session.decide(1, [1.0], terminated=True, behavior="Counter")
    session.leave(1)
    assert await session.decide(1, [1.0], terminated=True, behavior="Counter") is None


async def test_bad_batches_raise_spec_errors() -> None:
    session = GameSession({"Counter": COUNTER})
    with pytest.raises(SpecError, match="lists agent 4 twice"):
        await session.decide_batch("Counter", [4, 4], np.zeros((2, 1)))
    with pytest.raises(SpecError, match=r"has shape \(2, 2\), expected \(2, 1\)"):
        await session.decide_batch("Counter", [4, 5], np.zeros((2, 2)))
    with pytest.raises(SpecError, match="agent 5 of behavior 'Counter' contains NaN"):
        await session.decide_batch("Counter", [4, 5], np.array([[0.0], [np.nan]]))
    with pytest.raises(SpecError, match="the reward of agent 4 of behavior 'Counter' is not finite"):
        await session.decide_batch("Counter", [4, 5], np.zeros((2, 1)), rewards=[np.inf, 0.0])
    with pytest.raises(
        SpecError, match="action mask of agent 5 of behavior 'Counter' forbids every action of branch 0"
    ):
        await session.decide_batch("Counter", [4, 5], np.zeros((2, 1)), action_mask=[[0, 0], [1, 1]])
    with pytest.raises(SpecError, match="unknown behavior 'Echo'"):
        await session.decide_batch("Echo", [4, 5], np.zeros((2, 1)))
    assert session.pending == 0 and session.agent_ids == []


async def test_aclose_fails_pending_decisions_with_a_clear_env_error() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    queued = asyncio.ensure_future(session.decide(1, [1.0, 0.0]))
    batch = asyncio.ensure_future(session.decide_batch("Echo", [2, 3], np.zeros((2, 2))))
    await asyncio.sleep(0)
    await session.aclose()
    with pytest.raises(EnvError, match="closed while agent 1 of behavior 'Echo' waited for a decision"):
        await queued
    with pytest.raises(EnvError, match="closed while 2 agents of behavior 'Echo' waited"):
        await batch
    with pytest.raises(EnvError, match="GameSession is closed"):
        await session.decide(1, [1.0, 0.0])
    with pytest.raises(EnvError, match="GameSession is closed"):
        await session.step({})


async def test_aclose_wakes_an_env_loop_waiting_for_decisions() -> None:
    session = GameSession({"Echo": ECHO})
    await session.reset()
    stepping = asyncio.ensure_future(session.step({}))
    await asyncio.sleep(0)
    assert not stepping.done(), "the env loop waits: nothing is queued"
    await session.aclose()
    with pytest.raises(EnvError, match="closed"):
        await asyncio.wait_for(stepping, 1)


async def test_runner_with_fake_trainer_reconciles_decisions_steps_and_trajectories() -> None:
    """Every decision ends in exactly one trajectory step; every episode in one trajectory."""
    factory = fake_trainer_factory()
    session = GameSession({"Counter": COUNTER})
    settings = make_run_settings(max_steps=10**6, time_horizon=1000)
    returned = 0
    episode_length, rounds = 5, 40

    async def agent(i: int) -> None:
        nonlocal returned
        t = 0
        for k in range(rounds):
            if t == episode_length:
                assert await session.decide(i, [float(t)], reward=1.0, terminated=True) is None
                t = 0
            action = await session.decide(i, [float(t)], reward=1.0 if t else 0.0)
            assert action is not None and action.discrete.shape == (1,)
            returned += 1
            t += 1
            if i == 0 and k == 17:
                break  # agent 0 leaves mid-episode
            await asyncio.sleep(0)
        session.leave(i)

    async with Runner(settings, session, trainer_factory=factory, seed=3, stats_writers=[]) as runner:
        await asyncio.wait_for(asyncio.gather(*(agent(i) for i in range(6))), 20)
        trainer = factory.made[0]  # type: ignore[attr-defined]
        deadline = time.perf_counter() + 5
        while sum(len(t) for t in trainer.received) < returned and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    stats = session.stats
    assert returned == stats.decisions == runner.env_stats.decisions == 18 + 5 * rounds
    assert runner.env_stats.env_steps == stats.steps
    received = trainer.received
    assert sum(len(t) for t in received) == returned, "each action got its reward exactly once"
    ended = [t for t in received if t.done_reached]
    assert len(received) == len(ended) == stats.episodes_ended + stats.leaves
    assert stats.leaves == 6
    assert sum(t.interrupted for t in received) == 6 and sum(t.terminated for t in received) == stats.episodes_ended
    assert session.closed, "the env loop closes its env when the Runner stops"


async def test_when_the_runner_dies_waiting_decides_fail_instead_of_hanging() -> None:
    session = GameSession({"Counter": COUNTER})
    env = CrashingEnv(session, crash_after=3, error=RuntimeError("the env broke"))
    runner = Runner(make_run_settings(max_steps=10**6), env, trainer_factory=fake_trainer_factory(), stats_writers=[])
    run = asyncio.ensure_future(runner.run())
    outcomes: list[BaseException | None] = []

    async def agent(i: int) -> None:
        try:
            for t in range(100):
                await session.decide(i, [float(t)])
        except EnvError as exc:
            outcomes.append(exc)

    await asyncio.wait_for(asyncio.gather(*(agent(i) for i in range(4))), 10)
    with pytest.raises(RuntimeError, match="the env broke"):
        await asyncio.wait_for(run, 10)
    assert env.steps == 3 and env.closed and session.closed
    assert len(outcomes) == 4
    assert all("GameSession" in str(e) and "closed" in str(e) for e in outcomes)


async def test_groups_reach_the_env_loop_with_each_members_group_reward_once() -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    session.set_group(1, 7)
    session.set_group(2, 7)
    assert session.add_group_reward(7, 0.5) == 2
    await asyncio.wait_for(asyncio.gather(*(session.decide(i, obs_for(i, 0)) for i in (1, 2, 3))), 5)
    assert session.add_group_reward(7, 1.5) == 2
    # Agent 1 ends its episode, agent 2 decides: each gets the 1.5 with that row, agent 3 nothing.
    assert await session.decide(1, obs_for(1, 1), terminated=True) is None
    await asyncio.wait_for(asyncio.gather(session.decide(2, obs_for(2, 1)), session.decide(3, obs_for(3, 1))), 5)
    await driver.stop()
    rows: dict[int, list[tuple[int, float]]] = {}
    for batch in (b for b in driver.batches if "Echo" in b):
        for steps in (batch["Echo"].decision, batch["Echo"].terminal):
            assert steps.group_id is not None and steps.group_reward is not None
            for i, agent in enumerate(steps.agent_id.tolist()):
                rows.setdefault(agent, []).append((int(steps.group_id[i]), float(steps.group_reward[i])))
    assert rows[1] == [(7, 0.5), (7, 1.5)]
    assert rows[2] == [(7, 0.5), (7, 1.5)]
    assert rows[3] == [(0, 0.0), (0, 0.0)]


async def test_set_group_zero_takes_an_agent_out_and_bad_groups_are_refused() -> None:
    session = GameSession({"Echo": ECHO})
    session.set_group(1, 2)
    session.set_group(4, 2)
    session.set_group(4, 0)
    assert session.add_group_reward(2, 1.0) == 1
    with pytest.raises(SpecError, match="group ids are ints >= 0"):
        session.set_group(1, -1)
    with pytest.raises(SpecError, match="group ids are ints >= 0"):
        session.set_group(1, True)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="the group reward nan for group 2 is not a finite float32"):
        session.add_group_reward(2, float("nan"))
    assert session.leave(1) is False  # it never decided, yet it leaves its group too
    assert session.add_group_reward(2, 1.0) == 0
