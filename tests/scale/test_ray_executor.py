"""``env_settings.executor: ray``: env workers as Ray actors, the learner in the test's loop.

One local Ray (2 CPUs, no dashboard, no auth token written to the home directory) serves
the whole module. Skipped only when Ray is not installed (``pip install 'asynctrainer[ray]'``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.envs.gymnasium_env import GymnasiumEnv
from asynctrainer.envs.unity.sources import UnityEnvFactory, unity_env_factories
from asynctrainer.errors import EnvError, SettingsError
from asynctrainer.scale.ray_executor import RayEnvExecutor, executor_of
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.testing.fakes import CountingEnv, fake_trainer_factory
from asynctrainer.testing.settings import dummy_ppo_settings
from asynctrainer.testing.simple_env import SimpleEnvironment
from asynctrainer.testing.unity_standin import free_ports, write_player_executable

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'asynctrainer[ray]'")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def ray_settings(behavior: str, *, num_workers: int = 2, env_path: str | None = None, **trainer: Any) -> Any:
    env = {"executor": "ray", "num_workers": num_workers, "env_path": env_path}
    trainer.setdefault("strict_on_policy", False)
    return dummy_ppo_settings(behavior, run={"env_settings": env}, **trainer)


def the_executor(runner: Runner) -> RayEnvExecutor:
    executor = executor_of(runner)
    assert executor is not None
    return executor


async def test_ppo_with_two_ray_workers_passes_the_1d_learning_bar() -> None:
    # ML-Agents' dummy PPO config and 1-D budget (3000 steps), as tests/ppo/test_learning.py.
    factory = functools.partial(SimpleEnvironment, "1D", action_sizes=(0, 1), seed=1337)
    runner = Runner(ray_settings("1D", strict_on_policy=True), factory, seed=1337, stats_writers=[])
    result = await runner.run()
    trainer = runner.trainers["1D"]
    last5 = list(trainer.reward_buffer)[:5]  # newest first
    assert len(last5) == 5
    assert float(np.mean(last5)) > 0.9
    executor = the_executor(runner)
    assert [w.batches > 0 for w in executor.workers] == [True, True]  # both workers fed the learner
    assert result.steps["1D"] >= 3000 and result.env_steps > 0
    assert executor.dropped_trajectories == 0 and executor.worker_restarts == 0
    # strict_on_policy under Ray: one call in flight per worker, so the lag stays about one
    # version; a trajectory a worker carries over from one call to the next may start one older.
    lag = [v for r in trainer.stats_reporter.history for k, v in r.values.items() if k == "Policy/Lag"]
    assert lag and max(s.mean for s in lag) < 3.0


async def test_a_killed_worker_is_restarted_its_partial_trajectories_counted_and_training_finishes() -> None:
    factory = fake_trainer_factory(update_seconds=0.01)
    env = functools.partial(CountingEnv, num_agents=4, episode_length=40, step_delay=0.001)
    settings = ray_settings("Counter", max_steps=10**7, time_horizon=32, summary_freq=500)
    runner = Runner(settings, env, trainer_factory=factory, seed=3, stats_writers=[])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while (executor := executor_of(runner)) is None or not executor.workers or executor.workers[0].batches < 3:
                await anyio.sleep(0.01)
            ray.kill(executor.workers[0].actor, no_restart=False)
            step_at_kill = runner.trainers["Counter"].step
            # Ray restarts the actor (a new process: a second or two); the driver keeps asking it.
            while executor.workers[0].restarts == 0 or executor.workers[0].batches < 6:
                await anyio.sleep(0.01)
            # Now let training run to its end: max_steps a little ahead.
            trainer = runner.trainers["Counter"]
            trainer.trainer_settings.max_steps = trainer.step + 1000
    result = runner.result
    assert result is not None and not result.stopped_early
    assert result.steps["Counter"] > step_at_kill + 1000
    executor = the_executor(runner)
    assert executor.dropped_trajectories > 0
    assert executor.worker_restarts == executor.workers[0].restarts == 1
    assert executor.lost_batches >= 1
    assert all(w.alive for w in executor.workers)
    stats = [r.values for r in trainer.stats_reporter.history]
    assert any(v.get("Ray/Dropped Trajectories") and v["Ray/Dropped Trajectories"].mean > 0 for v in stats)


async def test_stale_trajectories_are_dropped_and_counted_and_a_stop_is_prompt() -> None:
    factory = fake_trainer_factory(update_seconds=0.05)
    env = functools.partial(CountingEnv, num_agents=4, episode_length=8, step_delay=0.0005)
    runner = Runner(
        ray_settings("Counter", max_steps=10**6, time_horizon=8), env, trainer_factory=factory, stats_writers=[]
    )
    from asynctrainer.scale import ray_executor

    original = ray_executor.DEFAULT_MAX_POLICY_LAG
    ray_executor.DEFAULT_MAX_POLICY_LAG = 0
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                while runner.trainers.get("Counter") is None or runner.trainers["Counter"].update_count < 5:
                    await anyio.sleep(0.02)
                started = time.monotonic()
                runner.stop()
            stop_seconds = time.monotonic() - started
    finally:
        ray_executor.DEFAULT_MAX_POLICY_LAG = original
    executor = the_executor(runner)
    assert executor.stale_trajectories > 0
    trainer = factory.made[0]  # type: ignore[attr-defined]
    # The check is made when a batch arrives at the driver, against the newest policy then.
    assert trainer.received and trainer.update_count >= 5
    assert stop_seconds < 5
    # The workers were shut down.
    for worker in executor.workers:
        with pytest.raises(ray.exceptions.RayActorError):
            await worker.actor.start.remote()


async def test_workers_build_their_envs_from_env_path_when_the_runner_got_an_env_object() -> None:
    factory = fake_trainer_factory()
    settings = ray_settings("CartPole", num_workers=1, env_path="CartPole-v1", max_steps=500, time_horizon=32)
    env = GymnasiumEnv("CartPole-v1", 1, seed=0)
    runner = Runner(settings, env, env_id="CartPole-v1", trainer_factory=factory, stats_writers=[])
    result = await runner.run()
    assert result.steps["CartPole"] >= 500
    assert the_executor(runner).workers[0].batches > 0
    received = factory.made[0].received  # type: ignore[attr-defined]
    assert all(t.agent_id.startswith("agent_0-") for t in received)


def factory_workers_cannot_import() -> CountingEnv:
    # Pickled by reference to this test module, which Ray's worker processes cannot import.
    return CountingEnv()


async def test_a_worker_that_cannot_be_built_is_an_env_error_saying_why() -> None:
    settings = ray_settings("Counter", num_workers=1, max_steps=100, time_horizon=8)
    runner = Runner(settings, factory_workers_cannot_import, trainer_factory=fake_trainer_factory(), stats_writers=[])
    with anyio.fail_after(60), pytest.raises(EnvError, match=r"could not be started.*test_ray_executor"):
        await runner.run()


async def test_ray_workers_launch_their_own_unity_players_on_their_own_ports(tmp_path: Path) -> None:
    """executor: ray with a Unity build: the driver's player 0 gives the specs, then each worker
    launches its players (ports base+1, base+2) and trains from them; every player is told to quit."""
    base = free_ports(3)
    record_args = tmp_path / "argv.jsonl"
    build = write_player_executable(tmp_path / "Game", num_agents=2, record_args=record_args)
    settings = run_settings_from_dict(
        {
            "behaviors": {"1D": {"trainer_type": "ppo", "max_steps": 4000, "time_horizon": 32, "summary_freq": 1000}},
            "env_settings": {"executor": "ray", "num_workers": 2, "env_path": str(build), "base_port": base},
        }
    )
    factories = unity_env_factories(settings, run_dir=tmp_path / "run", seed=7)
    assert [f.port for f in factories] == [base]
    trainer_factory = fake_trainer_factory()
    runner = Runner(settings, factories, trainer_factory=trainer_factory, seed=7, stats_writers=[])
    with anyio.fail_after(120):
        result = await runner.run()
    assert result.steps["1D"] >= 4000
    assert [w.batches > 0 for w in the_executor(runner).workers] == [True, True]
    received = trainer_factory.made[0].received  # type: ignore[attr-defined]
    assert {t.agent_id.split("-")[0] for t in received} == {"agent_0", "agent_1"}
    launches = [json.loads(line)["argv"] for line in record_args.read_text().splitlines()]
    ports = sorted(int(a[a.index("--mlagents-port") + 1]) for a in launches)
    assert ports == [base, base + 1, base + 2]
    logs = sorted(p.name for p in (tmp_path / "run" / "run_logs").glob("Player-*.log"))
    assert logs == ["Player-0.log", "Player-1.log", "Player-2.log"]


def test_unity_on_ray_needs_a_built_player() -> None:
    settings = run_settings_from_dict({"env_settings": {"executor": "ray"}})
    with pytest.raises(SettingsError, match="executor: ray launches Unity players inside the Ray workers") as info:
        unity_env_factories(settings)
    assert info.value.key_path == "env_settings.executor"
    with pytest.raises(EnvError, match="only one Editor can connect"):
        UnityEnvFactory(5004).for_worker(1)
