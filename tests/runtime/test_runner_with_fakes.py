"""Runner tests with fake trainers and fake envs: no TensorFlow, milliseconds each."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.errors import SettingsError, UpdateError
from asynctrainer.testing import make_run_settings
from asynctrainer.testing.fakes import CountingEnv, fake_trainer_factory, random_snapshot


async def test_fake_trainer_run_counts_steps_and_updates_off_the_loop() -> None:
    factory = fake_trainer_factory()
    env = CountingEnv(num_agents=2, episode_length=5)
    result = await Runner(
        make_run_settings(max_steps=100), env, trainer_factory=factory, seed=1, stats_writers=[]
    ).run()
    trainer = factory.made[0]  # type: ignore[attr-defined]
    assert result.steps["Counter"] > 100
    assert result.updates["Counter"] == trainer.updates_finished >= 2
    assert threading.get_ident() not in trainer.update_threads
    # CountingEnv's episodes are 5 steps, shorter than the time horizon: one trajectory each.
    assert result.episodes["Counter"] * 5 == result.steps["Counter"]
    assert env.closed


async def test_fake_trainer_update_failure_surfaces_as_update_error_with_behavior_and_step() -> None:
    factory = fake_trainer_factory(fail_at_update=2)
    with pytest.raises(UpdateError) as info:
        await Runner(make_run_settings(), CountingEnv(), trainer_factory=factory, stats_writers=[]).run()
    err = info.value
    assert err.behavior_name == "Counter"
    assert err.step >= 64
    assert isinstance(err.__cause__, RuntimeError)
    assert not isinstance(err, BaseExceptionGroup)


async def test_cancelling_run_mid_update_waits_for_the_thread_and_ends_promptly() -> None:
    started = threading.Event()
    factory = fake_trainer_factory(update_seconds=0.3, on_update=lambda t: started.set())
    env = CountingEnv()
    runner = Runner(make_run_settings(max_steps=10_000), env, trainer_factory=factory, stats_writers=[])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not started.is_set():
                await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    trainer = factory.made[0]  # type: ignore[attr-defined]
    # The thread finished its update, but its result was discarded: no new version was published.
    assert trainer.updates_finished == 1
    assert runner.slots["Counter"].version == 0
    assert env.closed


async def test_fake_trainer_with_strict_on_policy_env_loop_waits_for_each_new_snapshot() -> None:
    factory = fake_trainer_factory(update_seconds=0.02)
    settings = make_run_settings(max_steps=200, strict_on_policy=True)
    runner = Runner(settings, CountingEnv(num_agents=2, episode_length=5), trainer_factory=factory, stats_writers=[])
    await runner.run()
    trainer = factory.made[0]  # type: ignore[attr-defined]
    # Once a buffer is full the env loop waits for the new snapshot, so an update never learns
    # from experience older than the previous snapshot (only trajectories in progress at the
    # update carry the previous version).
    assert len(trainer.updated_batches) >= 5
    for k, batch in enumerate(trainer.updated_batches):
        versions = set(np.concatenate([t.policy_versions for t in batch]).tolist())
        assert versions <= {k - 1, k}, f"update {k} saw versions {sorted(versions)}"
    assert runner.env_stats.lag_waits >= len(trainer.updated_batches) - 1


async def test_fake_trainer_without_strict_acting_runs_ahead_and_lag_is_reported() -> None:
    factory = fake_trainer_factory(update_seconds=0.05)
    runner = Runner(
        make_run_settings(max_steps=300),
        CountingEnv(num_agents=4, episode_length=5),
        trainer_factory=factory,
        stats_writers=[],
    )
    await runner.run()
    trainer = factory.made[0]  # type: ignore[attr-defined]
    seen = [set(np.concatenate([t.policy_versions for t in b]).tolist()) for b in trainer.updated_batches]
    assert any(len(s) > 1 or min(s) < k for k, s in enumerate(seen)), "acting never overlapped an update"
    lags = [r.values["Policy/Lag"].mean for r in trainer.stats_reporter.history if "Policy/Lag" in r.values]
    assert max(lags) > 0


async def test_runner_as_context_manager_stops_cleanly_on_exit() -> None:
    factory = fake_trainer_factory()
    env = CountingEnv(step_delay=0.001)
    async with Runner(make_run_settings(max_steps=10**6), env, trainer_factory=factory, stats_writers=[]) as runner:
        await anyio.sleep(0.1)
    result = runner.result
    assert result is not None and result.stopped_early
    assert 0 < result.steps["Counter"] < 10**6
    assert env.closed


async def test_loop_keeps_ticking_while_a_fake_update_blocks_its_thread() -> None:
    factory = fake_trainer_factory(update_seconds=0.2)
    runner = Runner(make_run_settings(max_steps=10**6), CountingEnv(), trainer_factory=factory, stats_writers=[])
    ticks_during_update = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        with anyio.fail_after(10):
            while ticks_during_update < 5:
                await anyio.sleep(0.001)
                made = factory.made  # type: ignore[attr-defined]
                if made and len(made[0].update_threads) > made[0].updates_finished:
                    ticks_during_update += 1
        runner.stop()
    assert ticks_during_update >= 5


async def test_fake_trainer_run_writes_ml_agents_timer_tree(tmp_path: Path) -> None:
    factory = fake_trainer_factory()
    settings = make_run_settings(max_steps=100)
    runner = Runner(
        settings, CountingEnv(), trainer_factory=factory, results_dir=tmp_path, run_id="t", stats_writers=[]
    )
    await runner.run()
    tree = json.loads((tmp_path / "t" / "run_logs" / "timers.json").read_text())
    children = tree["children"]
    assert children["env_step"]["count"] > 0
    advance = children["trainer_advance"]
    assert advance["children"]["_update_policy"]["count"] == runner.trainers["Counter"].update_count
    assert "process_trajectory" in advance["children"]
    assert (tmp_path / "t" / "configuration.yaml").exists()


async def test_fake_trainers_of_two_behaviors_finishing_apart_do_not_stall_each_other() -> None:
    from asynctrainer.settings import run_settings_from_dict
    from asynctrainer.testing.simple_env import SimpleEnvironment

    def behavior(max_steps: int) -> dict[str, object]:
        return {
            "trainer_type": "ppo",
            "hyperparameters": {"batch_size": 16, "buffer_size": 32},
            "max_steps": max_steps,
            "time_horizon": 8,
            "strict_on_policy": True,
        }

    settings = run_settings_from_dict({"behaviors": {"A": behavior(100), "B": behavior(600)}})
    factory = fake_trainer_factory()
    env = SimpleEnvironment(["A", "B"], num_agents=2)
    with anyio.fail_after(20):
        result = await Runner(settings, env, trainer_factory=factory, stats_writers=[]).run()
    assert 100 < result.steps["A"] < 600 <= result.steps["B"]


def _actions_by_obs(trajectories: list[Any]) -> dict[float, set[int]]:
    chosen: dict[float, set[int]] = {}
    for t in trajectories:
        for obs, action in zip(t.obs[:, 0], t.actions_discrete[:, 0], strict=True):
            chosen.setdefault(float(obs), set()).add(int(action))
    return chosen


@pytest.mark.parametrize("deterministic", [False, True])
async def test_network_settings_deterministic_acts_with_the_mode_while_training(deterministic: bool) -> None:
    # No update within the run (buffer_size above max_steps): every action comes from snapshot 0.
    settings = make_run_settings(
        max_steps=400,
        hyperparameters={"buffer_size": 10_000},
        network_settings={"hidden_units": 32, "num_layers": 1, "deterministic": deterministic},
    )
    factory = fake_trainer_factory()
    await Runner(
        settings, CountingEnv(num_agents=4, episode_length=5), trainer_factory=factory, seed=3, stats_writers=[]
    ).run()
    trainer = factory.made[0]  # type: ignore[attr-defined]
    chosen = _actions_by_obs(trainer.received)
    if deterministic:
        spec = trainer.spec
        mode = random_snapshot("Counter", spec).act(
            np.array(sorted(chosen), np.float32)[:, None], deterministic=True, rng=np.random.default_rng(0)
        )
        assert {obs: actions for obs, actions in chosen.items()} == {
            obs: {int(a)} for obs, a in zip(sorted(chosen), mode.discrete[:, 0], strict=True)
        }
    else:  # the control: sampling picks both actions for some observation
        assert any(len(actions) == 2 for actions in chosen.values())


async def test_gc_is_frozen_once_at_start_and_once_after_the_first_update(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    factory = fake_trainer_factory()
    monkeypatch.setattr("gc.freeze", lambda: calls.append(sum(t.update_count for t in factory.made)))
    # A slow env: each advance() gets one trajectory, so many calls fall between two updates.
    settings = make_run_settings(max_steps=400)
    result = await Runner(
        settings,
        CountingEnv(num_agents=2, episode_length=5, step_delay=0.001),
        trainer_factory=factory,
        stats_writers=[],
    ).run()
    assert result.updates["Counter"] >= 3
    assert len(calls) == 2, calls
    assert calls[0] == 0 and calls[1] >= 1


async def test_runner_repr_names_its_public_path_and_state() -> None:
    factory = fake_trainer_factory()
    runner = Runner(make_run_settings(max_steps=50), CountingEnv(), trainer_factory=factory, stats_writers=[])
    assert repr(runner).startswith("asynctrainer.Runner(run_id=")
    assert "['Counter']" in repr(runner) and "not started" in repr(runner)
    await runner.run()
    assert repr(runner).endswith("done)")


@pytest.mark.parametrize("run_id", ["../outside", "/abs", ".", ""])
def test_runner_run_id_argument_must_be_a_plain_name(run_id: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"Runner\(run_id=\.\.\.\): .*a run id must be a plain name") as info:
        Runner(
            make_run_settings(),
            CountingEnv(),
            trainer_factory=fake_trainer_factory(),
            results_dir=tmp_path,
            run_id=run_id,
        )
    assert info.value.key_path == "run_id"
    assert list(tmp_path.iterdir()) == []


class SlowRecordingWriter:
    """A stats writer that takes its time: records queue up behind it while training ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.steps: list[int] = []
        self.closed_after: int | None = None

    def write_stats(self, record: Any) -> None:
        import time

        time.sleep(self.seconds)
        self.steps.append(record.step)

    def close(self) -> None:
        self.closed_after = len(self.steps)


async def test_every_summary_is_written_and_the_writers_closed_before_run_returns() -> None:
    writer = SlowRecordingWriter(0.05)
    settings = make_run_settings(max_steps=300)
    env = CountingEnv(num_agents=2, episode_length=5)
    await Runner(settings, env, trainer_factory=fake_trainer_factory(), stats_writers=[writer]).run()
    # Failed before: the run cancelled the stats task with summaries still queued, and never closed the writers.
    frequency = settings.behaviors["Counter"].summary_freq
    assert writer.steps[-1] >= 300 - frequency
    assert len(writer.steps) >= 300 // frequency
    assert writer.closed_after == len(writer.steps)


async def test_a_cancelled_run_still_closes_its_stats_writers() -> None:
    writer = SlowRecordingWriter(0.0)
    runner = Runner(
        make_run_settings(max_steps=10**6),
        CountingEnv(),
        trainer_factory=fake_trainer_factory(),
        stats_writers=[writer],
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not writer.steps:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert writer.closed_after == len(writer.steps) >= 1
