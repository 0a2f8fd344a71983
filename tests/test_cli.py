"""The CLI as a user meets it: bad input gives one paragraph, a non-zero exit and no files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asynctrainer.cli import main

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
    "unsupported feature": GOOD + "    self_play: {window: 10}\n",
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
    "hallway.yaml": "network_settings.memory",
    "pyramids.yaml": "reward_signals.curiosity",
    "soccer_twos.yaml": "trainer_type",
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
