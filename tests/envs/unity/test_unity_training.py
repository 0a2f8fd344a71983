"""Training with Unity: the Runner and asynctrainer-learn against the Unity stand-in (Editor and players)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from asynctrainer import Runner
from asynctrainer.app import check_observations
from asynctrainer.cli import main
from asynctrainer.envs.spec import DIM_NONE, DIM_VARIABLE_SIZE, ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.envs.unity.sources import UnityEnvFactory, is_unity_build, unity_env_factories
from asynctrainer.errors import EnvError, SettingsError, UnsupportedFeatureError
from asynctrainer.testing.settings import dummy_sac_settings, make_run_settings
from asynctrainer.testing.tensorboard import read_scalars
from asynctrainer.testing.unity_standin import UnityStandIn, free_ports, write_player_executable


def ppo(name: str = "1D", max_steps: int = 3000, **env_settings: Any) -> Any:
    """ML-Agents' dummy PPO config (see tests/ppo/test_learning.py)."""
    return make_run_settings(
        name,
        hyperparameters={"buffer_size": 64},
        summary_freq=500,
        max_steps=max_steps,
        time_horizon=64,
        strict_on_policy=True,
        env_settings=env_settings,
    )


@pytest.mark.learning
async def test_ppo_reaches_mlagents_bar_in_the_editor_and_unity_is_told_to_quit(tmp_path: Path) -> None:
    port = free_ports()
    standin = UnityStandIn(port, num_agents=4, seed=1337)
    play = asyncio.create_task(standin.run())
    runner = Runner(ppo(max_steps=4000), UnityEnvFactory(port), results_dir=tmp_path, seed=1337, stats_writers=[])
    result = await runner.run()
    record = await asyncio.wait_for(play, 30)
    assert result.steps["1D"] >= 4000
    assert standin.sim.mean_final_reward("1D?team=0") > 0.9
    assert record.final_status == 400  # the trainer's goodbye, not a closed port
    onnx = tmp_path / runner.run_id / "1D.onnx"
    session = onnxruntime.InferenceSession(str(onnx))
    assert "obs_0" in [i.name for i in session.get_inputs()]


@pytest.mark.learning
async def test_sac_reaches_mlagents_bar_in_the_editor(tmp_path: Path) -> None:
    # ML-Agents' dummy SAC config, 4 agents sharing the steps.
    # strict_on_policy: each update before the next steps, so the run is the same however loaded the machine.
    settings = dummy_sac_settings("1D", summary_freq=500, max_steps=4000, strict_on_policy=True)
    port = free_ports()
    standin = UnityStandIn(port, num_agents=4, seed=1337)
    play = asyncio.create_task(standin.run())
    runner = Runner(settings, UnityEnvFactory(port), results_dir=tmp_path, seed=1337, stats_writers=[])
    result = await runner.run()
    await asyncio.wait_for(play, 30)
    assert result.updates["1D"] > 0
    assert standin.sim.mean_final_reward("1D?team=0") > 0.9
    assert (tmp_path / runner.run_id / "1D.onnx").is_file()


async def test_stop_in_the_editor_ends_the_run_with_its_final_save(tmp_path: Path) -> None:
    port = free_ports()
    standin = UnityStandIn(port, num_agents=2, max_steps=150)
    play = asyncio.create_task(standin.run())
    runner = Runner(ppo(max_steps=100_000), UnityEnvFactory(port), results_dir=tmp_path, stats_writers=[])
    result = await asyncio.wait_for(runner.run(), 120)
    record = await play
    assert record.final_status == 400
    assert 0 < result.steps["1D"] <= 2 * 150
    run_dir = tmp_path / runner.run_id
    assert (run_dir / "1D.onnx").is_file()
    assert list((run_dir / "1D").glob("1D-*.onnx")), "the final checkpoint"


async def test_players_are_launched_with_mlagents_arguments_and_a_crashed_one_is_relaunched(tmp_path: Path) -> None:
    base = free_ports(2)
    record_args = tmp_path / "argv.jsonl"
    marker = tmp_path / "crashed"
    build = tmp_path / "Game"
    write_player_executable(build, num_agents=2, record_args=record_args, crash_after=40, crash_once_marker=marker)
    assert is_unity_build(build)
    settings = ppo(
        max_steps=600,
        env_path=str(build),
        num_envs=2,
        base_port=base,
        restarts_rate_limit_n=5,
        env_args=["--extra", "1"],
    )
    run_dir = tmp_path / "results" / "run"
    settings.engine_settings.no_graphics = True
    factories = unity_env_factories(settings, run_dir=run_dir, seed=3)
    assert [f.port for f in factories] == [base, base + 1]
    runner = Runner(settings, factories, results_dir=tmp_path / "results", run_id="run", stats_writers=[])
    result = await asyncio.wait_for(runner.run(), 240)
    assert result.steps["1D"] >= 600
    launches = [json.loads(line) for line in record_args.read_text().splitlines()]
    assert len(launches) == 3, "two players and one relaunch after the crash"
    ports = sorted(int(a["argv"][a["argv"].index("--mlagents-port") + 1]) for a in launches)
    assert ports.count(base) + ports.count(base + 1) == 3 and set(ports) == {base, base + 1}
    for launch in launches:
        argv = launch["argv"]
        assert "-nographics" in argv and "-batchmode" in argv
        assert argv[-2:] == ["--extra", "1"]
        log = Path(argv[argv.index("-logFile") + 1])
        assert log.parent == run_dir / "run_logs" and log.name.startswith("Player-")
    assert marker.exists()


async def test_a_player_that_keeps_crashing_fails_the_run_when_its_restarts_are_spent(tmp_path: Path) -> None:
    base = free_ports()
    build = tmp_path / "Game"
    write_player_executable(build, crash_after=5)
    settings = ppo(
        max_steps=100_000, env_path=str(build), base_port=base, max_lifetime_restarts=2, restarts_rate_limit_n=5
    )
    runner = Runner(settings, unity_env_factories(settings), stats_writers=[])
    with pytest.raises(EnvError, match="restart"):
        await asyncio.wait_for(runner.run(), 120)


def test_several_envs_without_a_build_are_refused() -> None:
    with pytest.raises(SettingsError, match="num_envs"):
        unity_env_factories(ppo(num_envs=2))


def test_the_cli_without_env_waits_for_the_editor_and_writes_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_ports()
    config = tmp_path / "config.yaml"
    config.write_text(
        "behaviors:\n  1D:\n    trainer_type: ppo\n    max_steps: 200\n    summary_freq: 100\n"
        "    hyperparameters: {batch_size: 16, buffer_size: 64}\n"
        "environment_parameters:\n  difficulty: 2.5\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    records: list[Any] = []

    def play() -> None:
        records.append(asyncio.run(UnityStandIn(port, num_agents=2).run(connect_timeout=120)))

    import threading

    editor = threading.Thread(target=play)
    editor.start()
    code = main([str(config), "--run-id", "editor", "--base-port", str(port)])
    editor.join(60)
    assert code == 0
    run_dir = tmp_path / "results" / "editor"
    assert (run_dir / "1D.onnx").is_file()
    assert (run_dir / "configuration.yaml").is_file()
    assert json.loads((run_dir / "run_logs" / "timers.json").read_text())["name"]
    assert records and records[0].environment_parameters == {"difficulty": 2.5}
    (events,) = (run_dir / "1D").glob("events.out.tfevents*")
    tags = {tag for _, tag, _ in read_scalars(events)}
    assert {"Custom/Goal", "Custom/Episodes", "Environment/Cumulative Reward"} <= tags  # Unity's stats channel


def test_the_cli_trains_several_players_of_a_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = free_ports(3)
    build = tmp_path / "Game"
    record_args = tmp_path / "argv.jsonl"
    write_player_executable(build, num_agents=2, record_args=record_args)
    config = tmp_path / "config.yaml"
    config.write_text(
        "behaviors:\n  1D:\n    trainer_type: ppo\n    max_steps: 300\n"
        "    hyperparameters: {batch_size: 16, buffer_size: 64}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            str(config),
            "--env",
            str(build),
            "--num-envs",
            "3",
            "--base-port",
            str(base),
            "--run-id",
            "p",
            "--no-graphics",
        ]
    )
    assert code == 0
    launches = [json.loads(line)["argv"] for line in record_args.read_text().splitlines()]
    assert sorted(int(a[a.index("--mlagents-port") + 1]) for a in launches) == [base, base + 1, base + 2]
    logs = sorted(p.name for p in (tmp_path / "results" / "p" / "run_logs").glob("Player-*.log"))
    assert logs == ["Player-0.log", "Player-1.log", "Player-2.log"]
    assert (tmp_path / "results" / "p" / "1D.onnx").is_file()


def test_the_cli_refuses_several_envs_without_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("behaviors:\n  1D:\n    trainer_type: ppo\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main([str(config), "--num-envs", "2"]) == 2
    err = capsys.readouterr().err
    assert "num_envs" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_factories_pickle_for_remote_workers() -> None:
    import pickle

    factory = unity_env_factories(ppo(env_path=sys.executable, num_envs=2, base_port=6000), seed=5)[1]
    again = pickle.loads(pickle.dumps(factory))
    assert again == factory and again.port == 6001 and again.worker_id == 1
    assert np.isfinite(again.seed)


async def test_a_camera_observation_trains_and_exports_channel_first(tmp_path: Path) -> None:
    """A Unity camera (PNG, channel-first from com.unity.ml-agents 3.x) goes through the visual encoder."""
    port = free_ports()
    standin = UnityStandIn(port, num_agents=2, visual="chw")
    play = asyncio.create_task(standin.run())
    runner = Runner(ppo(max_steps=200), UnityEnvFactory(port), results_dir=tmp_path, stats_writers=[])
    result = await runner.run()
    record = await asyncio.wait_for(play, 30)
    assert result.steps["1D"] >= 200 and record.final_status == 400
    specs = runner.slots["1D"].latest().behavior_spec.observation_specs
    camera = next(i for i, o in enumerate(specs) if o.name == "CameraSensor")
    assert specs[camera].is_visual and runner.slots["1D"].latest().encoders[camera] is not None
    session = onnxruntime.InferenceSession(str(tmp_path / runner.run_id / "1D.onnx"))
    height, width = standin.image_size
    assert session.get_inputs()[camera].shape == ["batch", 3, height, width]


def test_variable_length_observations_of_the_wrong_rank_are_refused_before_a_trainer_is_built() -> None:
    ray = ObservationSpec((3,), "Ray")
    buffer = ObservationSpec((20, 6), "BufferSensor", (DIM_VARIABLE_SIZE, DIM_NONE))
    check_observations("Sorter", BehaviorSpec((ray, buffer), ActionSpec.create_discrete((2,))))  # Sorter's layout
    cube = ObservationSpec((20, 6, 2), "BufferSensor", (DIM_VARIABLE_SIZE, DIM_NONE, DIM_NONE))
    with pytest.raises(UnsupportedFeatureError, match=r"'BufferSensor' is variable-length with shape 20x6x2"):
        check_observations("Sorter", BehaviorSpec((ray, cube), ActionSpec.create_discrete((2,))))
