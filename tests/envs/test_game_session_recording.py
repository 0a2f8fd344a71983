"""GameSession records demonstrations while it serves: policy-driven and player-driven agents."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from asynctrainer import Runner, load_demonstration
from asynctrainer.envs.game_session import AgentAction, GameSession
from asynctrainer.errors import SpecError, UsageError
from asynctrainer.files import is_temp_name
from asynctrainer.testing import SimpleEnvironment, make_run_settings
from asynctrainer.testing.fakes import fake_trainer_factory
from tests.envs.test_game_session import ECHO, Driver, obs_for


async def test_policy_decisions_are_recorded_with_the_actions_the_policy_chose(tmp_path: Path) -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    recorder = session.record(tmp_path / "echo.demo", agents=[1])
    for k in range(3):
        got = await asyncio.gather(session.decide(1, obs_for(1, k), reward=k), session.decide(2, obs_for(2, k)))
        assert got[0] is not None and got[1] is not None
    assert await session.decide(1, obs_for(1, 3), reward=5.0, terminated=True) is None
    await session.decide(2, obs_for(2, 3))  # lets the env loop collect the terminal
    path = await recorder.aclose()
    await driver.stop()
    demo = load_demonstration(path)
    record = demo.parts[0]
    assert record.agent_id.tolist() == [1, 1, 1, 1]  # agent 2 was not chosen
    assert record.done.tolist() == [False, False, False, True]
    assert record.reward.tolist() == [0.0, 1.0, 2.0, 5.0]
    rows = demo.transitions()
    # The echo policy's action is the observation: each row's action is its own observation's.
    np.testing.assert_array_equal(rows.discrete[:, 0], rows.obs[0][:, 0].astype(np.int32))
    np.testing.assert_allclose(rows.continuous[:, 0], rows.obs[0][:, 1])
    assert rows.done.tolist() == [False, False, True]


async def test_a_players_actions_are_recorded_and_returned_without_the_policy(tmp_path: Path) -> None:
    session = GameSession({"Echo": ECHO})
    recorder = session.record(tmp_path / "player.demo")  # no env loop at all: players need none
    action = await session.decide(7, obs_for(7, 0), action=(np.array([0.5]), np.array([3])))
    assert isinstance(action, AgentAction) and action.discrete.tolist() == [3]
    await session.decide(
        7, obs_for(7, 1), reward=1.0, action=AgentAction(np.array([-0.25], np.float32), np.array([6], np.int32))
    )
    with pytest.raises(SpecError, match="player-driven: its decide\\(\\) needs action="):
        await session.decide(7, obs_for(7, 2))
    with pytest.raises(SpecError, match="outside the branches"):
        await session.decide(7, obs_for(7, 2), action=([0.0], [8]))
    with pytest.raises(SpecError, match="in \\[-1, 1\\]"):
        await session.decide(7, obs_for(7, 2), action=([2.0], [0]))
    assert await session.decide(7, obs_for(7, 2), reward=2.0, terminated=True) is None
    await session.decide(8, obs_for(8, 0), action=([0.0], [1]))
    assert session.leave(8)
    path = await recorder.aclose()
    demo = load_demonstration(path)
    assert demo.parts[0].agent_id.tolist() == [7, 7, 7, 8, 8]
    assert demo.parts[0].done.tolist() == [False, False, True, False, True]
    assert demo.parts[0].interrupted.tolist() == [False, False, False, False, True]
    rows = demo.transitions()
    assert rows.continuous[:, 0].tolist() == [0.5, -0.25, 0.0] and rows.discrete[:, 0].tolist() == [3, 6, 1]
    assert session.agent_ids == [] and session.stats.decisions == 0  # the policy was never asked


async def test_an_agent_the_policy_plays_cannot_be_taken_over_mid_episode(tmp_path: Path) -> None:
    session = GameSession({"Echo": ECHO})
    driver = Driver(session).start()
    await session.decide(1, obs_for(1, 0))
    with pytest.raises(SpecError, match="in an episode the policy plays"):
        await session.decide(1, obs_for(1, 1), action=([0.0], [0]))
    await driver.stop()


async def test_a_closed_recording_stops_and_the_file_appears_only_then(tmp_path: Path) -> None:
    session = GameSession({"Echo": ECHO})
    recorder = session.record(tmp_path / "r.demo")
    await session.decide(1, obs_for(1, 0), action=([0.0], [0]))
    await recorder.flush()
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and is_temp_name(names[0]) and recorder.bytes_written > 33
    await recorder.aclose()
    assert [p.name for p in tmp_path.iterdir()] == ["r.demo"]
    await session.decide(1, obs_for(1, 1), action=([0.0], [0]))  # recorded nowhere now
    assert load_demonstration(tmp_path / "r.demo").number_steps == 1
    with pytest.raises(UsageError, match="is closed"):
        recorder.add(1, [obs_for(1, 2)], continuous=[0.0], discrete=[0])


async def test_players_are_recorded_while_a_training_run_goes_on(tmp_path: Path) -> None:
    """Human-style decisions (the expert of SimpleEnvironment) beside policy agents, during training."""
    simple = SimpleEnvironment("1D", action_sizes=(0, 1))
    spec = simple.behavior_specs["1D"]
    session = GameSession({"1D": spec})
    settings = make_run_settings(max_steps=10**6)
    factory = fake_trainer_factory()
    async with Runner(settings, session, trainer_factory=factory, stats_writers=[]) as runner:
        recorder = session.record(tmp_path / "human.demo", agents=[100])
        rng = np.random.default_rng(0)

        async def policy_agent(agent: int) -> None:
            for _ in range(200):
                await session.decide(agent, rng.choice([-1.0, 1.0], size=1))

        async def player() -> None:
            for _ in range(20):  # 20 episodes of the optimal 5 moves
                goal = float(rng.choice([-1.0, 1.0]))
                for step in range(5):
                    await session.decide(100, np.array([goal]), reward=-0.01 * (step > 0), action=([], [int(goal > 0)]))
                await session.decide(100, np.array([goal]), reward=1.06, terminated=True)
                await asyncio.sleep(0)

        await asyncio.gather(policy_agent(1), policy_agent(2), player())
        await recorder.aclose()
        (trainer,) = runner.trainers.values()
        assert trainer.get_step > 0 and trainer.updates_finished >= 1  # the policy agents trained meanwhile
    demo = load_demonstration(tmp_path / "human.demo")
    assert demo.number_steps == 20 * 6 and demo.number_episodes == 21
    rows = demo.transitions()
    assert ((rows.discrete[:, 0] == 1) == (rows.obs[0][:, 0] > 0)).all()
