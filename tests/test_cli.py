"""The CLI as a user meets it: bad input gives one paragraph, a non-zero exit and no files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from asynctrainer.cli import RUN_MARKER, _report, main
from asynctrainer.errors import CheckpointSaveError, SettingsError

GOOD = """
behaviors:
  CartPole:
    trainer_type: ppo
    hyperparameters: {batch_size: 32, buffer_size: 64, learning_rate: 3.0e-4}
    network_settings: {hidden_units: 16, num_layers: 1}
    max_steps: 300
    summary_freq: 100
    time_horizon: 32
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_CONFIGS = {
    "unknown key": GOOD.replace("max_steps: 300", "max_stepz: 300"),
    "wrong type": GOOD.replace("max_steps: 300", "max_steps: lots"),
    "zero size": GOOD.replace("batch_size: 32", "batch_size: 0"),
    "negative size": GOOD.replace("time_horizon: 32", "time_horizon: -4"),
    "batch over buffer": GOOD.replace("batch_size: 32", "batch_size: 128"),
    "bad yaml": "behaviors: [unclosed",
    "empty file": "",
    "unknown trainer": GOOD.replace("trainer_type: ppo", "trainer_type: dqn").replace(
        "    hyperparameters: {batch_size: 32, buffer_size: 64, learning_rate: 3.0e-4}\n", ""
    ),
    "unsupported feature": GOOD.replace("trainer_type: ppo", "trainer_type: poca").replace(
        "num_layers: 1}", "num_layers: 1, memory: {memory_size: 16}}"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_paragraph_exit_2_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    code = main([write(tmp_path, BAD_CONFIGS[case]), "--env", "CartPole-v1", "--results-dir", str(results)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("asynctrainer-learn: error:")
    assert "Traceback" not in err and "\n\n" not in err.strip()
    assert not results.exists()


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.yaml"), "--env", "CartPole-v1", "--results-dir", str(tmp_path / "r")]) == 2
    assert "was not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unknown_env_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([write(tmp_path, GOOD), "--env", "CartPole-v7", "--results-dir", str(tmp_path / "r")])
    assert code == 2
    assert "Unknown gymnasium env id 'CartPole-v7'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_behavior_without_settings_lists_the_configured_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = GOOD + GOOD.replace("behaviors:\n  CartPole:", "  Other:")
    code = main([write(tmp_path, two), "--env", "Pendulum-v1", "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "CartPole" in err and "Other" in err
    assert not (tmp_path / "r").exists()


def test_trains_then_refuses_an_existing_run_directory_without_force(tmp_path: Path) -> None:
    cfg = write(tmp_path, GOOD)
    results = tmp_path / "results"
    args = [cfg, "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1", "--seed", "3"]
    assert main(args) == 0
    run = results / "r1"
    assert (run / "configuration.yaml").exists()
    assert (run / "run_logs" / "timers.json").exists()
    assert list((run / "CartPole").glob("events.out.tfevents*"))
    before = sorted(p.name for p in run.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "-m", "asynctrainer.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Previous data from this run ID was found" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in run.rglob("*")) == before
    assert main([*args, "--force", "--max-steps", "100"]) == 0


# ML-Agents' example configs (tests/configs) and what asynctrainer does with them on CartPole:
# train, or refuse in one line naming the unsupported key.
EXAMPLE_CONFIGS = {
    "3dball.yaml": None,
    "walker.yaml": None,
    "gridworld_sac.yaml": None,
    "hallway.yaml": None,
    "pyramids.yaml": None,
    "soccer_twos.yaml": None,
}


@pytest.mark.parametrize("config", sorted(EXAMPLE_CONFIGS))
def test_ml_agents_example_configs_train_or_are_refused_in_one_line(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(__file__).parent / "configs" / config
    results = tmp_path / "results"
    code = main([str(path), "--env", "CartPole-v1", "--results-dir", str(results), "--max-steps", "200"])
    err = " ".join(capsys.readouterr().err.split())
    refused_key = EXAMPLE_CONFIGS[config]
    if refused_key is None:
        assert code == 0, err
        assert (results / "ppo" / "configuration.yaml").exists()
    else:
        assert code == 2
        assert refused_key in err and "not supported yet" in err and "Traceback" not in err
        assert not results.exists()


def test_an_env_factory_that_raises_is_exit_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "raising_env_factory.py").write_text("def make():\n    raise RuntimeError('no licence server')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    results = tmp_path / "results"
    code = main([write(tmp_path, GOOD), "--env", "raising_env_factory:make", "--results-dir", str(results)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "raising_env_factory:make" in err and "no licence server" in err and "Traceback" not in err
    assert not results.exists()


def _user_dir(path: Path) -> dict[str, str]:
    path.mkdir(parents=True)
    files = {"thesis.tex": "years of work", "notes/todo.txt": "back this up"}
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return files


def _survives(path: Path, files: dict[str, str]) -> bool:
    return all((path / rel).read_text() == text for rel, text in files.items())


def test_force_refuses_a_directory_this_tool_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    files = _user_dir(results / "r1")
    code = main(
        [write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1", "--force"]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "was not made by asynctrainer-learn" in err and RUN_MARKER in err
    assert _survives(results / "r1", files)


def test_force_refuses_a_symlinked_run_directory_even_with_a_marker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    files = _user_dir(elsewhere)
    (elsewhere / RUN_MARKER).write_text("")
    results = tmp_path / "results"
    results.mkdir()
    (results / "r1").symlink_to(elsewhere, target_is_directory=True)
    code = main(
        [write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1", "--force"]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "symbolic link" in err, err
    assert _survives(elsewhere, files) and (results / "r1").is_symlink()


def _marked_run(path: Path) -> dict[str, str]:
    files = _user_dir(path)
    (path / RUN_MARKER).write_text("")
    return files


@pytest.mark.parametrize("where", ["inside the run", "mistyped"])
def test_a_bad_init_path_is_refused_naming_it_before_force_deletes_anything(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    files = _marked_run(results / "r1")
    init = results / "r1" / "CartPole" if where == "inside the run" else tmp_path / "nowhere" / "CartPole"
    cfg = write(tmp_path, GOOD.replace("    max_steps: 300", f"    max_steps: 300\n    init_path: {init}"))
    code = main([cfg, "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1", "--force"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "behaviors.CartPole.init_path" in err and str(init) in err and "Traceback" not in err
    assert _survives(results / "r1", files)


@pytest.mark.parametrize(
    ("env", "variable", "named"),
    [
        ("NoSuchEnv-v9", None, "NoSuchEnv-v9"),
        ("CartPole-v1", ("ASYNCTRAINER_TF_THREADS", "many"), "ASYNCTRAINER_TF_THREADS"),
        ("CartPole-v1", ("ASYNCTRAINER_LEARNER_PRIORITY", "urgent"), "ASYNCTRAINER_LEARNER_PRIORITY"),
    ],
    ids=["env id", "thread count", "priority"],
)
def test_a_bad_env_or_environment_variable_is_refused_before_force_deletes_anything(
    env: str,
    variable: tuple[str, str] | None,
    named: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = tmp_path / "results"
    files = _marked_run(results / "r1")
    if variable is not None:
        monkeypatch.setenv(*variable)
    code = main([write(tmp_path, GOOD), "--env", env, "--results-dir", str(results), "--run-id", "r1", "--force"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and named in err and "Traceback" not in err, err
    assert _survives(results / "r1", files)


@pytest.mark.parametrize("where", ["missing", "inside the run"])
def test_a_bad_demonstration_is_refused_naming_it_before_force_deletes_anything(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    files = _marked_run(results / "r1")
    demo = results / "r1" / "expert.demo" if where == "inside the run" else tmp_path / "nowhere.demo"
    cfg = write(
        tmp_path,
        GOOD.replace("    max_steps: 300", f"    max_steps: 300\n    behavioral_cloning: {{demo_path: {demo}}}"),
    )
    code = main([cfg, "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1", "--force"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "behaviors.CartPole.behavioral_cloning.demo_path" in err and str(demo) in err and "Traceback" not in err
    assert _survives(results / "r1", files)


def test_initialize_from_the_run_being_forced_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    files = _marked_run(results / "r1")
    cfg = write(tmp_path, GOOD + "checkpoint_settings: {force: true, initialize_from: r1}\n")
    code = main([cfg, "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--force would delete" in err, err
    assert _survives(results / "r1", files)


def test_an_unwritable_results_directory_is_a_run_directory_error_before_tensorflow_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    args = [write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(blocker / "results")]
    script = (
        "import sys\n"
        "from asynctrainer.cli import main\n"
        f"code = main({args!r})\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Cannot write the run directory" in proc.stderr and "--results-dir" in proc.stderr
    assert "tensorflow loaded: False" in proc.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_read_only_results_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        code = main([write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(results)])
    finally:
        results.chmod(0o755)
    assert code == 2 and "Cannot write the run directory" in capsys.readouterr().err
    assert list(results.iterdir()) == []


def test_several_errors_at_once_print_one_paragraph_each(capsys: pytest.CaptureFixture[str]) -> None:
    periodic = CheckpointSaveError("Could not save the checkpoint of 'CartPole' at step 500: No space left on device.")
    final = CheckpointSaveError("Could not save the final checkpoint of 'CartPole': No space left on device.")
    bad = SettingsError("The behavior 'Other' has no entry.")
    group = ExceptionGroup("unhandled errors in a TaskGroup", [periodic, ExceptionGroup("inner", [final, bad])])
    code = _report(ExceptionGroup("unhandled errors in a TaskGroup", [group]), debug=False)
    err = capsys.readouterr().err
    paragraphs = [" ".join(p.split()) for p in err.split("asynctrainer-learn: error: ")[1:]]
    assert paragraphs == [str(e) for e in (periodic, final, bad)]
    assert "ExceptionGroup" not in err and "sub-exception" not in err
    assert code == 2, "the highest exit code of the errors"


def _train_until_a_summary(tmp_path: Path, results: Path) -> subprocess.Popen[str]:
    cfg = write(tmp_path, GOOD)
    args = [cfg, "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1", "--max-steps", "1e7"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "asynctrainer.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # training runs once a summary line is printed
        if "CartPole. Step:" in line:
            return proc
    proc.wait(timeout=30)
    raise AssertionError(f"the run ended before its first summary (exit {proc.returncode})")


# Two different signals, sent at once, are both delivered (a second SIGINT could merge with the first),
# in either order: the exit code is the first one's.
@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGTERM)])
def test_a_run_stopped_by_signals_saves_then_exits_128_plus_the_first_signal(
    signals: tuple[signal.Signals, ...], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    proc = _train_until_a_summary(tmp_path, results)
    try:
        for signum in signals:
            proc.send_signal(signum)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    first = next(s for s in signals if f"Learning was interrupted ({s.name})" in out)
    assert proc.returncode == 128 + first == (130 if first == signal.SIGINT else 143), out
    run = results / "r1"
    assert (run / "run_logs" / "timers.json").is_file(), out
    assert list((run / "CartPole" / "checkpoints").iterdir()), "the final save ran"
    assert "Traceback" not in out
    assert ("stopping now" in out) == (len(signals) > 1), "the second signal cut the run short"


def test_force_with_inference_is_refused_and_keeps_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    files = _marked_run(results / "r1")
    args = [write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "r1"]
    code = main([*args, "--force", "--inference"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--force and --inference" in err, err
    assert _survives(results / "r1", files)


@pytest.mark.parametrize("existing", [True, False])
def test_a_run_id_with_a_path_is_refused_by_the_settings_naming_run_id(
    existing: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    other_run = _marked_run(results / "other")
    outside = _marked_run(tmp_path / "x") if existing else {}
    args = [write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", "../x"]
    code = main([*args, "--force"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "checkpoint_settings.run_id: '../x' is not valid: a run id must be a plain name" in err, err
    assert _survives(results / "other", other_run) and sorted(p.name for p in results.iterdir()) == ["other"]
    if existing:
        assert _survives(tmp_path / "x", outside)
    else:
        assert not (tmp_path / "x").exists(), "nothing was made outside the results directory"


@pytest.mark.parametrize("run_id", ["../outside", "ABSOLUTE", ".", ""])
def test_force_never_deletes_outside_the_results_directory_nor_the_results_directory(
    run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    other_run = _marked_run(results / "other")  # another run: deleting the results dir would take it
    target = tmp_path / "outside"
    outside = _marked_run(target)  # marked, yet not under the results directory
    (results / RUN_MARKER).write_text("")
    if run_id == "ABSOLUTE":
        run_id = str(target)
    args = [write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(results), "--run-id", run_id]
    code = main([*args, "--force"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err  # refused by the run-id check of the settings, or by --force's own
    assert _survives(target, outside) and _survives(results / "other", other_run)


def test_record_demo_records_the_policy_playing_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asynctrainer import load_demonstration

    results, demo = tmp_path / "results", tmp_path / "demos" / "cartpole.demo"
    args = [write(tmp_path, GOOD), "--env", "CartPole-v1", "--results-dir", str(results), "--record-demo", str(demo)]
    assert main(args) == 0, capsys.readouterr().err
    recorded = load_demonstration(demo)
    assert recorded.brain_name == "CartPole?team=0" and recorded.number_steps >= 300
    rows = recorded.transitions()
    assert set(rows.discrete[:, 0].tolist()) == {0, 1} and rows.done.sum() >= 1  # it played, episodes ended
    again = main([*args[:-2], "--run-id", "second", "--record-demo", str(demo)])
    err = " ".join(capsys.readouterr().err.split())
    assert again == 2 and "would overwrite" in err and not (results / "second").exists()
    wrong = main([*args[:-2], "--run-id", "third", "--record-demo", str(tmp_path / "x.txt")])
    assert wrong == 2 and "ending in .demo" in " ".join(capsys.readouterr().err.split())


TICTACTOE_SELF_PLAY = """
behaviors:
  player:
    trainer_type: ppo
    hyperparameters: {batch_size: 32, buffer_size: 64, learning_rate: 3.0e-4}
    network_settings: {hidden_units: 16, num_layers: 1, vis_encode_type: fully_connected}
    max_steps: 300
    summary_freq: 100
    time_horizon: 8
    self_play: {save_steps: 64, swap_steps: 64, team_change: 128, window: 3}
"""


def test_a_pettingzoo_game_trains_by_self_play_from_the_cli(tmp_path: Path) -> None:
    import json

    results = tmp_path / "results"
    code = main(
        [
            write(tmp_path, TICTACTOE_SELF_PLAY),
            *("--env", "pettingzoo:classic/tictactoe-v3", "--num-envs", "2"),
            *("--results-dir", str(results), "--run-id", "ttt", "--seed", "1"),
        ]
    )
    assert code == 0
    run = results / "ttt"
    status = json.loads((run / "run_logs" / "training_status.json").read_text())
    assert status["player"]["final_checkpoint"]["steps"] >= 300
    assert status["player"]["elo"] != 1200.0  # games were played and rated (the first team won or lost some)
    assert (run / "player.onnx").exists()


def test_a_pettingzoo_group_without_settings_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    two = TICTACTOE_SELF_PLAY.replace("  player:", "  striker:") + TICTACTOE_SELF_PLAY.replace(
        "behaviors:\n  player:", "  goalie:"
    )
    cfg = write(tmp_path, two)
    code = main([cfg, "--env", "pettingzoo:classic/tictactoe-v3", "--results-dir", str(results)])
    assert code == 2
    err = capsys.readouterr().err
    assert "The behavior 'player' has no entry" in err and "striker, goalie" in err
    assert "Traceback" not in err
    assert not (results / "ppo").exists()  # the default run id's directory was not made


def test_record_demo_refuses_self_play_teams_sharing_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    args = [write(tmp_path, TICTACTOE_SELF_PLAY), "--env", "pettingzoo:classic/tictactoe-v3"]
    code = main([*args, "--results-dir", str(results), "--record-demo", str(tmp_path / "demos")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--record-demo writes one file per behavior name" in err and "Traceback" not in err
    assert not (tmp_path / "demos").exists()
