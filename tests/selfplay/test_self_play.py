"""Self-play's runtime: routing, snapshots, team changes, ELO, checkpoints, refusals (fake trainers, no TensorFlow)."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.errors import CheckpointLoadError, SettingsError, SpecError, UnsupportedFeatureError
from asynctrainer.runtime.contracts import EnvJob
from asynctrainer.runtime.self_play import ELO_STAT, Ghost, SelfPlayController, elo_change, game_result
from asynctrainer.runtime.stats import StatsSummary, StatsSummaryRecord, console_line
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.settings import SelfPlaySettings, run_settings_from_dict
from asynctrainer.testing import make_run_settings
from asynctrainer.testing.fakes import FakeTrainer, fake_trainer_factory, random_snapshot, random_trajectory
from asynctrainer.testing.simple_env import SimpleEnvironment

TEAMS = ["1D?team=0", "1D?team=1"]


def self_play_settings(names: list[str], self_play: dict[str, Any], **trainer: Any) -> Any:
    cfg = {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 16, "buffer_size": 32},
        "max_steps": 400,
        "time_horizon": 8,
        "summary_freq": 100,
        "self_play": self_play,
        **trainer,
    }
    return run_settings_from_dict({"behaviors": {name: cfg for name in names}})


async def run_fake(env: SimpleEnvironment, settings: Any) -> tuple[Runner, dict[str, FakeTrainer]]:
    factory = fake_trainer_factory()
    runner = Runner(settings, env, trainer_factory=factory, seed=3, stats_writers=[])
    with anyio.fail_after(60):
        await runner.run()
    return runner, {t.behavior_name: t for t in factory.made}  # type: ignore[attr-defined]


def test_elo_change_is_the_result_minus_the_expected_score() -> None:
    assert elo_change(1200.0, 1200.0, 1.0) == pytest.approx(0.5)
    assert elo_change(1200.0, 1200.0, 0.0) == pytest.approx(-0.5)
    assert elo_change(1200.0, 1200.0, 0.5) == pytest.approx(0.0)
    expected = 1.0 / (1.0 + 10.0 ** (-400.0 / 400.0))  # 400 points above: E ≈ 0.909
    assert elo_change(1600.0, 1200.0, 1.0) == pytest.approx(1.0 - expected)


def _trajectory(rewards: list[float], *, terminated: bool, interrupted: bool = False) -> Trajectory:
    return random_trajectory(
        len(rewards),
        obs_size=1,
        continuous=0,
        ends=terminated or interrupted,
        behavior_name="1D?team=0",
        agent_id="0-0",
        rewards=np.array(rewards, np.float32),
        terminated=terminated,
        interrupted=interrupted,
    )


def test_game_result_reads_the_sign_of_the_last_reward_of_a_finished_game() -> None:
    assert game_result(_trajectory([-0.01, 1.0], terminated=True)) == 1.0
    assert game_result(_trajectory([0.5, -1.0], terminated=True)) == 0.0
    assert game_result(_trajectory([0.5, 0.0], terminated=True)) == 0.5
    assert game_result(_trajectory([1.0], terminated=False)) is None
    assert game_result(_trajectory([1.0], terminated=True, interrupted=True)) is None


def _ghost(name: str, controller: SelfPlayController, **self_play: Any) -> Ghost:
    settings = make_run_settings(name)
    trainer = FakeTrainer(name, settings.behaviors[name])
    return Ghost(trainer, SelfPlaySettings(**self_play), controller, np.random.default_rng(0))


def test_controller_lets_the_first_team_learn_and_rotates_the_queue_with_a_reset_each_time() -> None:
    controller = SelfPlayController()
    a, b = _ghost("A", controller), _ghost("B", controller)
    for team, ghost in [(0, a), (2, b), (1, a)]:
        controller.subscribe(team, ghost)
    assert controller.learning_team == 0
    for expected in (2, 1, 0, 2):
        a.current = b.current = random_snapshot("x", SimpleEnvironment().behavior_specs["1D"])
        a.window, b.window = [a.current], [b.current]
        controller.change_learning_team()
        assert controller.learning_team == expected
    assert controller.resets.requested == 4
    with pytest.raises(SpecError, match="team 2"):
        controller.subscribe(2, a)


def test_self_play_settings_default_team_change_and_warn_on_a_ratio_outside_0_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = self_play_settings(["1D"], {"save_steps": 300})
    self_play = settings.behaviors["1D"].self_play
    assert self_play is not None
    assert (self_play.team_change, self_play.swap_steps, self_play.window) == (1500, 2000, 10)
    assert self_play.initial_elo == 1200.0
    self_play_settings(["1D"], {"play_against_latest_model_ratio": 1.5})
    assert any("outside [0, 1]" in r.getMessage() for r in caplog.records)


async def test_only_the_learning_team_is_trained_on_and_the_other_plays_the_learners_snapshots() -> None:
    env = SimpleEnvironment(TEAMS, seed=1)
    self_play = {"save_steps": 50, "swap_steps": 40, "team_change": 1000, "play_against_latest_model_ratio": 0.0}
    runner, trainers = await run_fake(env, self_play_settings(["1D"], self_play))
    trainer = trainers["1D"]
    ghost = runner.ghosts["1D"]
    assert {t.behavior_name for t in trainer.received} == {"1D?team=0"}  # no team change before max_steps
    assert ghost.ghost_step > 300  # team 1 played as long, dropped
    stored = sum(len(t) for t in trainer.received)
    assert (
        trainer.step - 8 <= stored <= trainer.step
    )  # the last trajectory (time_horizon 8), past max_steps, is not kept
    # The window holds the learner's snapshots, one per save_steps; team 1 plays one of them.
    versions = [s.version for s in ghost.window]
    assert len(versions) >= 5 and versions == sorted(versions) and versions[0] == 0
    opponent = ghost.teams[1].link.slot.latest()
    assert opponent.version in versions and opponent.version < trainer.version


async def test_team_change_moves_learning_to_the_other_team_and_resets_the_env() -> None:
    env = SimpleEnvironment(TEAMS, seed=1)
    settings = self_play_settings(["1D"], {"save_steps": 30, "team_change": 100, "swap_steps": 40})
    runner, trainers = await run_fake(env, settings)
    trainer = trainers["1D"]
    names = [t.behavior_name for t in trainer.received]
    switches = sum(a != b for a, b in itertools.pairwise(names))
    assert set(names) == set(TEAMS) and switches >= 3
    assert runner.ghosts["1D"].controller.resets.requested >= 3


async def test_strict_on_policy_self_play_with_team_changes_never_stalls() -> None:
    """Each team change carries the strict on-policy count to the team that learns next."""
    env = SimpleEnvironment(TEAMS, seed=2, num_agents=3)
    settings = self_play_settings(["1D"], {"save_steps": 30, "team_change": 50}, strict_on_policy=True)
    _, trainers = await run_fake(env, settings)
    trainer = trainers["1D"]
    assert trainer.step > 400 and trainer.updates_finished >= 10


async def test_asymmetric_self_play_alternates_two_trainers_until_both_finish() -> None:
    env = SimpleEnvironment(["1D?team=0", "1DOpp?team=1"], seed=1)
    settings = self_play_settings(["1D", "1DOpp"], {"save_steps": 50, "team_change": 100}, strict_on_policy=True)
    runner, trainers = await run_fake(env, settings)
    assert all(t.step > 400 for t in trainers.values())
    assert {t.behavior_name for t in trainers["1DOpp"].received} == {"1DOpp?team=1"}
    assert runner.ghosts["1D"].controller is runner.ghosts["1DOpp"].controller


async def test_elo_is_reported_and_moves_against_snapshots() -> None:
    env = SimpleEnvironment(TEAMS, seed=1)
    settings = self_play_settings(["1D"], {"save_steps": 20, "swap_steps": 20, "play_against_latest_model_ratio": 0.0})
    runner, trainers = await run_fake(env, settings)
    summaries = [r.values[ELO_STAT] for r in trainers["1D"].stats_reporter.history if ELO_STAT in r.values]
    assert any(s.count > 0 for s in summaries), "no ELO summary was written"
    ghost = runner.ghosts["1D"]
    assert ghost.elos[-1] != 1200.0  # SimpleEnvironment's games end in wins (+) or losses (−)
    record = StatsSummaryRecord("1D", 100, 1.0, {ELO_STAT: StatsSummary.of([1234.5678])})
    assert "ELO: 1234.568" in console_line(record)


async def test_the_window_and_ratings_survive_a_checkpoint_round_trip() -> None:
    env = SimpleEnvironment(TEAMS, seed=1)
    settings = self_play_settings(["1D"], {"save_steps": 30, "window": 4})
    runner, _ = await run_fake(env, settings)
    ghost = runner.ghosts["1D"]
    state = ghost.state()
    assert len(ghost.window) == 4 and "window/3/header" in state
    controller = SelfPlayController()
    fresh = _ghost("1D", controller, save_steps=30, window=4)
    fresh.restore(state)
    assert ghost.current is not None
    fresh._take_restored(state, ghost.current.behavior_spec)
    assert [s.version for s in fresh.window] == [s.version for s in ghost.window]
    for a, b in zip(fresh.window, ghost.window, strict=True):
        for key, value in a.weights().items():
            np.testing.assert_array_equal(value, b.weights()[key])
    assert fresh.elos == ghost.elos and fresh.ghost_step == ghost.ghost_step and fresh.counter == ghost.counter
    bad = dict(state, elos=np.zeros(3))
    with pytest.raises(CheckpointLoadError, match="window 4"):
        fresh._take_restored(bad, ghost.current.behavior_spec)
    del state["window/0/header"]
    with pytest.raises(CheckpointLoadError, match="snapshots"):
        fresh._take_restored(state, ghost.current.behavior_spec)


async def test_two_teams_without_self_play_are_refused_naming_the_key() -> None:
    env = SimpleEnvironment(TEAMS)
    with pytest.raises(SettingsError, match="self_play") as info:
        await Runner(make_run_settings("1D"), env, trainer_factory=fake_trainer_factory(), stats_writers=[]).run()
    assert info.value.key_path == "behaviors.1D.self_play"


class _OtherExecutor:
    async def run(self, job: EnvJob, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        raise AssertionError("never started")


async def test_self_play_is_refused_with_an_executor_other_than_local() -> None:
    env = SimpleEnvironment(TEAMS)
    settings = self_play_settings(["1D"], {})
    runner = Runner(settings, env, trainer_factory=fake_trainer_factory(), executor=_OtherExecutor(), stats_writers=[])
    with pytest.raises(UnsupportedFeatureError, match="executor"):
        await runner.run()
    assert env.closed


async def test_teams_of_one_name_with_different_specs_are_refused() -> None:
    class TwoSpecs(SimpleEnvironment):
        @property
        def behavior_specs(self) -> Any:
            specs = dict(super().behavior_specs)
            other = SimpleEnvironment("x", action_sizes=(1, 0)).behavior_specs["x"]
            specs["1D?team=1"] = other
            return specs

    with pytest.raises(SpecError, match="different"):
        await Runner(
            self_play_settings(["1D"], {}), TwoSpecs(TEAMS), trainer_factory=fake_trainer_factory(), stats_writers=[]
        ).run()
