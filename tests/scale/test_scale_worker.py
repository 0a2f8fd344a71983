"""The Ray env worker and its wire format, without Ray: plain objects on the test's loop."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest

from asynctrainer.cli import _override, main, parse_args
from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import EnvError, SettingsError
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.scale import require_ray
from asynctrainer.scale.codec import (
    snapshot_from_payload,
    snapshot_to_payload,
    trajectory_from_dict,
    trajectory_to_dict,
)
from asynctrainer.scale.ray_executor import resolve_worker_env
from asynctrainer.scale.worker import BehaviorConfig, EnvWorker
from asynctrainer.testing.fakes import CountingEnv, random_snapshot
from asynctrainer.testing.simple_env import SimpleEnvironment

SPEC = BehaviorSpec((ObservationSpec((1,)),), ActionSpec.create_discrete((2,)))


def message(name: str, version: int, spec: BehaviorSpec = SPEC) -> dict[str, object]:
    return {"behavior": name, "snapshot": snapshot_to_payload(random_snapshot(name, spec, version=version))}


def plain(value: object) -> bool:
    """Only builtins and numpy arrays: nothing that needs asynctrainer to unpickle."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, str | bool | int | float | np.ndarray)


def test_trajectory_round_trips_through_plain_data() -> None:
    rng = np.random.default_rng(0)
    t = Trajectory(
        behavior_name="B",
        agent_id="agent_3-1",
        obs=rng.normal(size=(4, 2)).astype(np.float32),
        next_obs=np.ones(2, np.float32),
        actions_continuous=np.zeros((4, 0), np.float32),
        actions_discrete=np.array([[0], [1], [1], [0]], np.int32),
        log_probs=np.full(4, -0.7, np.float32),
        entropies=np.full(4, 0.69, np.float32),
        rewards=np.array([0, 0, 0, 1], np.float32),
        action_masks=np.ones((4, 2), np.float32),
        policy_versions=np.array([3, 3, 4, 4], np.int64),
        terminated=True,
        episode_return=1.0,
        episode_length=4,
    )
    data = trajectory_to_dict(t)
    assert plain(data)
    back = trajectory_from_dict(pickle.loads(pickle.dumps(data)))
    for name in ("obs", "next_obs", "actions_discrete", "log_probs", "rewards", "action_masks", "policy_versions"):
        np.testing.assert_array_equal(getattr(back, name), getattr(t, name))
    assert (back.behavior_name, back.agent_id, back.terminated, back.interrupted) == ("B", "agent_3-1", True, False)
    assert (back.episode_return, back.episode_length, back.oldest_version) == (1.0, 4, 3)
    with pytest.raises(EnvError, match="format"):
        trajectory_from_dict({**data, "format": "asynctrainer.Trajectory/0"})


@pytest.mark.parametrize("spec", [SPEC, BehaviorSpec((ObservationSpec((3,)),), ActionSpec.create_continuous(2))])
def test_snapshot_payload_round_trips_and_acts_the_same(spec: BehaviorSpec) -> None:
    snapshot = random_snapshot("B", spec, version=7, seed=3)
    payload = snapshot_to_payload(snapshot)
    assert plain(payload)
    back = snapshot_from_payload(pickle.loads(pickle.dumps(payload)))
    assert (back.behavior_name, back.version, back.behavior_spec.action_spec) == ("B", 7, spec.action_spec)
    obs = np.random.default_rng(1).normal(size=(5, spec.observation_size)).astype(np.float32)
    a = snapshot.act(obs, rng=np.random.default_rng(2))
    b = back.act(obs, rng=np.random.default_rng(2))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


async def test_worker_samples_trajectories_acted_with_the_newest_policy() -> None:
    factory = functools.partial(SimpleEnvironment, "1D", action_sizes=(0, 1), num_agents=2)
    worker = EnvWorker(factory, {"1D": BehaviorConfig(time_horizon=8).to_dict()}, worker_index=1, envs_per_worker=2)
    info = await worker.start(message("1D", 0))
    assert info["behaviors"] == ["1D"] and info["copies"] == 2
    batch = await worker.sample(20, 1000)
    assert plain(batch)
    trajectories = [trajectory_from_dict(d) for d in batch["trajectories"]]
    assert sum(len(t) for t in trajectories) >= 20
    assert batch["env_steps"] > 0 and batch["decisions"] == 2 * batch["env_steps"]
    # Copies 2 and 3 of worker 1 (two copies per worker), two agents each.
    assert {t.agent_id.split("-")[0] for t in trajectories} <= {"agent_2", "agent_3"}
    assert all(set(t.policy_versions.tolist()) == {0} for t in trajectories)
    assert 0 < batch["open_trajectories"] <= 4
    # A newer policy is used from the next step; an older one is ignored.
    assert await worker.set_policy(message("1D", 5)) == 5
    assert await worker.set_policy(message("1D", 2)) == 5
    later = await worker.sample(20, 1000, message("1D", 4))
    versions = np.concatenate([trajectory_from_dict(d).policy_versions for d in later["trajectories"]])
    assert versions.max() == 5
    await worker.close()


async def test_worker_returns_after_max_env_steps_and_refuses_to_act_without_a_policy() -> None:
    worker = EnvWorker(
        functools.partial(CountingEnv, episode_length=50),
        {"Counter": {"time_horizon": 64, "deterministic": False, "training": True}},
    )
    with pytest.raises(EnvError, match="no policy"):
        await worker.sample(10, 10)
    batch = await worker.sample(10, 10, message("Counter", 0))
    assert batch["env_steps"] == 10 and batch["trajectories"] == []
    assert batch["open_trajectories"] == 2


async def test_worker_builds_gymnasium_envs_by_id_as_one_vector_env() -> None:
    worker = EnvWorker(
        "CartPole-v1", {"CartPole": BehaviorConfig(time_horizon=16).to_dict()}, envs_per_worker=3, seed=1
    )
    spec = BehaviorSpec((ObservationSpec((4,)),), ActionSpec.create_discrete((2,)))
    info = await worker.start(message("CartPole", 0, spec))
    assert info["copies"] == 1
    batch = await worker.sample(30, 1000)
    # The three copies step together; a copy whose episode ended decides nothing in the step
    # that resets it (gymnasium's next-step autoreset).
    ended = sum(trajectory_from_dict(d).done_reached for d in batch["trajectories"])
    assert 3 * batch["env_steps"] - ended <= batch["decisions"] <= 3 * batch["env_steps"]
    await worker.close()


async def test_worker_with_an_env_of_other_behaviors_is_an_env_error() -> None:
    worker = EnvWorker(functools.partial(CountingEnv, "Other"), {"Counter": BehaviorConfig(time_horizon=8).to_dict()})
    with pytest.raises(EnvError, match="Counter"):
        await worker.start()


def test_workers_need_a_factory_or_an_env_path() -> None:
    factory = functools.partial(CountingEnv)
    assert resolve_worker_env(factory, "CartPole-v1") is factory
    assert resolve_worker_env(CountingEnv(), "CartPole-v1") == "CartPole-v1"
    with pytest.raises(EnvError, match="factory"):
        resolve_worker_env(CountingEnv(), None)


def test_missing_ray_is_a_settings_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(SettingsError, match=r"asynctrainer\[ray\]") as info:
        require_ray()
    assert info.value.key_path == "env_settings.executor"


async def test_a_closed_worker_stops_sampling_and_closes_its_envs() -> None:
    made: list[CountingEnv] = []

    def factory() -> CountingEnv:
        made.append(CountingEnv())
        return made[-1]

    worker = EnvWorker(factory, {"Counter": BehaviorConfig(time_horizon=8).to_dict()}, envs_per_worker=2)
    await worker.start(message("Counter", 0))
    await worker.close()
    assert [env.closed for env in made] == [True, True]
    batch = await worker.sample(10, 10)  # a call still queued when the driver stopped
    assert batch["trajectories"] == [] and batch["env_steps"] == 0


def test_cli_flags_set_the_executor(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("behaviors:\n  CartPole:\n    trainer_type: ppo\n")
    args = parse_args([str(config), "--executor", "ray", "--num-workers", "3", "--ray-address", "auto"])
    env = _override(args).env_settings
    assert (env.executor, env.num_workers, env.ray_address, env.envs_per_worker) == ("ray", 3, "auto", 1)
    assert _override(parse_args([str(config)])).env_settings.executor == "local"


def test_cli_asking_for_ray_without_it_is_exit_2_naming_the_extra_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    config = tmp_path / "config.yaml"
    config.write_text("behaviors:\n  CartPole:\n    trainer_type: ppo\n")
    results = tmp_path / "results"
    code = main([str(config), "--env", "CartPole-v1", "--executor", "ray", "--results-dir", str(results)])
    assert code == 2
    err = capsys.readouterr().err
    assert "asynctrainer[ray]" in err and "Traceback" not in err
    assert not results.exists()
