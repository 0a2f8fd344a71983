"""Resume with PPO (TensorFlow): exact restore, and the CLI's resume / initialise / inference paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.checkpoints.format import TMP_MARK, list_checkpoints
from asynctrainer.checkpoints.manager import find_checkpoint, load_checkpoint_state
from asynctrainer.cli import main
from asynctrainer.errors import CheckpointLoadError
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.testing.simple_env import SimpleEnvironment

pytest.importorskip("tensorflow")


def ppo_settings(max_steps: int = 400, hidden_units: int = 16) -> Any:
    return run_settings_from_dict(
        {
            "behaviors": {
                "1D": {
                    "trainer_type": "ppo",
                    "hyperparameters": {"batch_size": 16, "buffer_size": 64, "learning_rate": 5e-3},
                    "network_settings": {"hidden_units": hidden_units, "num_layers": 1, "normalize": True},
                    "max_steps": max_steps,
                    "summary_freq": 100,
                    "time_horizon": 16,
                    "checkpoint_interval": 100,
                    "keep_checkpoints": 3,
                }
            }
        }
    )


def runner(tmp_path: Path, settings: Any, **kwargs: Any) -> Runner:
    env = SimpleEnvironment("1D", action_sizes=(0, 1), seed=5, num_agents=2)
    return Runner(settings, env, results_dir=tmp_path, run_id="run", seed=5, stats_writers=[], **kwargs)


def assert_same_state(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


async def test_resume_restores_weights_optimizer_slots_and_step_exactly(tmp_path: Path) -> None:
    first = runner(tmp_path, ppo_settings())
    result = await first.run()
    trained = first.trainers["1D"]
    assert result.updates["1D"] >= 5
    live = trained.get_state()
    newest = find_checkpoint(tmp_path / "run" / "1D", "1D")
    saved = load_checkpoint_state(newest)
    # The final checkpoint is the trainer at the end of training, bit for bit.
    assert newest.name == f"1D-{result.steps['1D']}"
    assert_same_state(saved, live)
    optimizer = [k for k in saved if k.startswith("algo/optimizer/")]
    assert len(optimizer) > 2 and any(np.any(saved[k] != 0) for k in optimizer if saved[k].ndim > 0)
    assert {"algo/normalizer/mean", "algo/rng", "trainer/reward_buffer"} <= set(saved)

    # max_steps not increased: the resumed run restores, trains nothing and saves again.
    second = runner(tmp_path, ppo_settings(), resume=True)
    again = await second.run()
    restored = second.trainers["1D"]
    assert again.steps == result.steps and again.updates == result.updates and again.episodes == result.episodes
    assert_same_state(restored.get_state(), saved)
    assert_same_state(load_checkpoint_state(find_checkpoint(tmp_path / "run" / "1D", "1D")), saved)
    # The restored policy acts as the saved one did.
    snapshot = second.slots["1D"].latest()
    assert snapshot is not None and snapshot.step == result.steps["1D"]
    for name, w in trained._make_snapshot(0).weights().items():
        np.testing.assert_array_equal(snapshot.weights()[name], w, err_msg=name)

    # Inference: the trained policy plays (max_steps env steps), nothing is updated or written.
    files = {str(p): p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    player = runner(tmp_path, ppo_settings(), training=False)
    played = await player.run()
    assert played.env_steps >= 400 and played.updates == result.updates and played.steps == result.steps
    assert_same_state(player.trainers["1D"].get_state(), saved)
    assert {str(p): p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == files

    # A fresh trainer with other initial weights: set_state gives the saved state exactly.
    from asynctrainer.ppo.trainer import PPOTrainer

    settings = ppo_settings().behaviors["1D"]
    fresh = PPOTrainer("1D", settings, seed=99)
    fresh.add_policy("1D", fresh.create_policy("1D", SimpleEnvironment("1D").behavior_specs["1D"]))
    assert not np.array_equal(fresh.get_state()["algo/weights/actor_0/kernel"], saved["algo/weights/actor_0/kernel"])
    fresh.set_state(saved)
    assert_same_state(fresh.get_state(), saved)
    assert fresh.step == result.steps["1D"]

    # Weights only (--initialize-from): same weights, step 0, fresh optimizer.
    init = PPOTrainer("1D", settings, seed=99)
    init.add_policy("1D", init.create_policy("1D", SimpleEnvironment("1D").behavior_specs["1D"]))
    init.set_state(saved, weights_only=True)
    state = init.get_state()
    assert init.step == 0 and int(state["trainer/step"][0]) == 0
    for key in (k for k in saved if k.startswith("algo/weights/")):
        np.testing.assert_array_equal(state[key], saved[key], err_msg=key)


async def test_initialize_from_a_different_network_names_the_layer(tmp_path: Path) -> None:
    await runner(tmp_path, ppo_settings(max_steps=100)).run()
    other = SimpleEnvironment("1D", action_sizes=(0, 1), seed=5)
    bigger = Runner(
        ppo_settings(hidden_units=32),
        other,
        results_dir=tmp_path,
        run_id="bigger",
        stats_writers=[],
        initialize_from=tmp_path / "run",
    )
    with pytest.raises(CheckpointLoadError) as info:
        await bigger.run()
    message = str(info.value)
    assert "layer 'actor_0/kernel'" in message and "(1, 32)" in message and "(1, 16)" in message
    assert "hidden_units" in message
    assert not (tmp_path / "bigger").exists()


# ----- the CLI ---------------------------------------------------------------------------------

CONFIG = """
behaviors:
  CartPole:
    trainer_type: ppo
    hyperparameters: {batch_size: 32, buffer_size: 64, learning_rate: 3.0e-4}
    network_settings: {hidden_units: 16, num_layers: 1}
    max_steps: 600
    summary_freq: 100
    time_horizon: 32
    checkpoint_interval: 100
    keep_checkpoints: 3
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished CartPole run ``<results>/run`` trained by the CLI (shared: tests copy it)."""
    base = tmp_path_factory.mktemp("trained")
    (base / "config.yaml").write_text(CONFIG)
    assert main(cli_args(base, "--seed", "3")) == 0
    return base / "results"


def cli_args(base: Path, *extra: str, run_id: str = "run", config: str = "config.yaml") -> list[str]:
    results = str(base / "results")
    return [str(base / config), "--env", "CartPole-v1", "--results-dir", results, "--run-id", run_id, *extra]


def copy_of(trained_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained_run.parent, tmp_path, dirs_exist_ok=True)
    return tmp_path / "results" / "run"


def one_paragraph(err: str) -> str:
    assert err.startswith("asynctrainer-learn: error:"), err
    assert "Traceback" not in err and "\n\n" not in err.strip(), err
    return " ".join(err.split())


def test_resume_with_a_corrupt_newest_checkpoint_says_which_file_and_how_to_recover(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(trained_run, tmp_path)
    committed = list_checkpoints(run / "CartPole" / "checkpoints")
    assert len(committed) >= 2  # saves coalesce when training outruns them: not always 3
    newest, previous = committed[-1], committed[-2]
    state = newest.path / "state.npz"
    state.write_bytes(state.read_bytes()[:-100])
    capsys.readouterr()
    assert main([*cli_args(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    text = one_paragraph(err)
    # The paths are whole on the line, not broken at their hyphens.
    assert str(state) in err and str(state) in text
    assert f"delete '{newest.path}' to resume from it" in text and str(previous.path) in text

    # Following the advice works: the run resumes from the previous checkpoint.
    shutil.rmtree(newest.path)
    assert main([*cli_args(tmp_path), "--resume"]) == 0
    assert find_checkpoint(run / "CartPole", "CartPole").name.startswith("CartPole-")
    assert not [p for p in run.rglob("*") if TMP_MARK in p.name]


def test_initialize_from_a_missing_run_exits_2_and_writes_nothing(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    assert main([*cli_args(tmp_path, run_id="new"), "--initialize-from", "nowhere"]) == 2
    text = one_paragraph(capsys.readouterr().err)
    assert str(tmp_path / "results" / "nowhere") in text
    assert not (tmp_path / "results").exists()


def test_initialize_from_a_run_with_other_hidden_units_exits_2_naming_the_layer(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_of(trained_run, tmp_path)
    (tmp_path / "wide.yaml").write_text(CONFIG.replace("hidden_units: 16", "hidden_units: 24"))
    capsys.readouterr()
    assert main([*cli_args(tmp_path, run_id="wide", config="wide.yaml"), "--initialize-from", "run"]) == 2
    text = one_paragraph(capsys.readouterr().err)
    assert "layer 'actor_0/kernel'" in text and "(4, 24)" in text and "(4, 16)" in text
    assert not (tmp_path / "results" / "wide").exists()
    # The same network loads: weights only, from step 0.
    assert main([*cli_args(tmp_path, run_id="same"), "--initialize-from", "run", "--max-steps", "64"]) == 0
    assert (tmp_path / "results" / "same" / "CartPole.onnx").is_file()


def test_inference_plays_the_trained_run_and_writes_nothing(
    trained_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = copy_of(trained_run, tmp_path)

    def listing() -> dict[str, int]:
        return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in [run, *run.rglob("*")]}

    before = listing()
    with caplog.at_level("INFO", logger="asynctrainer"):
        assert main([*cli_args(tmp_path), "--inference"]) == 0
    assert listing() == before
    newest = find_checkpoint(run / "CartPole", "CartPole")
    saved = load_checkpoint_state(newest)
    step, episodes, updates = (int(saved[f"trainer/{k}"][0]) for k in ("step", "episodes", "update_count"))
    messages = [r.getMessage() for r in caplog.records]
    assert f"CartPole: Resumed from {newest} (step {step})." in messages
    # Played with the trained policy: no trajectory reached the trainer, no update ran.
    assert f"CartPole: trained {step} steps, {episodes} episodes, {updates} updates." in messages


def test_attention_goal_conditioning_and_memory_are_saved_and_restored() -> None:
    from asynctrainer.ppo.trainer import PPOTrainer

    network = {"hidden_units": 16, "num_layers": 2, "memory": {"memory_size": 8, "sequence_length": 4}}
    settings = run_settings_from_dict(
        {
            "behaviors": {
                "1D": {"trainer_type": "ppo", "network_settings": network, "hyperparameters": {"batch_size": 16}}
            }
        }
    ).behaviors["1D"]
    spec = SimpleEnvironment("1D", num_var_len=1, goal_indices=(0,)).behavior_specs["1D"]

    def trainer(seed: int) -> PPOTrainer:
        t = PPOTrainer("1D", settings, seed=seed)
        t.add_policy("1D", t.create_policy("1D", spec))
        return t

    saved, fresh = trainer(1), trainer(2)
    state = saved.get_state()
    for part in (
        "actor_encoder_attention_query",
        "actor_hyper_weights",
        "critic_hyper_first",
        "actor_lstm",
        "critic_lstm",
    ):
        assert any(k.startswith(f"algo/weights/{part}") for k in state), part
    fresh.set_state(state)
    assert_same_state(fresh.get_state(), state)
    before, after = saved._make_snapshot(0), fresh._make_snapshot(0)
    assert after.attention is not None and after.hyper is not None and after.lstm is not None
    assert sorted(after.weights()) == sorted(before.weights())
    for name, w in before.weights().items():
        np.testing.assert_array_equal(after.weights()[name], w, err_msg=name)


def self_play_run(tmp_path: Path, max_steps: int, *, resume: bool = False) -> Runner:
    settings = ppo_settings(max_steps).to_yaml_dict()
    settings["behaviors"]["1D"]["self_play"] = {"save_steps": 50, "swap_steps": 40, "window": 3}
    env = SimpleEnvironment(["1D?team=0", "1D?team=1"], seed=2)
    return Runner(
        run_settings_from_dict(settings),
        env,
        results_dir=tmp_path,
        run_id="run",
        seed=5,
        stats_writers=[],
        resume=resume,
    )


async def test_self_play_window_ratings_and_counters_are_saved_and_restored(tmp_path: Path) -> None:
    first = self_play_run(tmp_path, 300)
    await first.run()
    ghost = first.ghosts["1D"]
    saved = [s.version for s in ghost.window]
    assert len(saved) == 3
    status = json.loads((tmp_path / "run" / "run_logs" / "training_status.json").read_text())
    assert status["1D"]["elo"] == pytest.approx(ghost.elos[-1])
    state = load_checkpoint_state(find_checkpoint(tmp_path / "run" / "1D", "1D"))
    np.testing.assert_array_equal(state["selfplay/elos"], ghost.elos)
    second = self_play_run(tmp_path, 400, resume=True)
    await second.run()
    resumed = second.ghosts["1D"]
    # Restored, then trained on: the ring kept its place, and a saved snapshot is still in it.
    assert resumed.ghost_step > ghost.ghost_step and second.trainers["1D"].step > 300
    assert set(saved) & {s.version for s in resumed.window}
    assert resumed.last_save > ghost.last_save > 0
