"""Notices of config loading: once per key per load, on the asynctrainer logger, never a Python warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from asynctrainer.cli import main
from asynctrainer.settings import run_settings_from_dict

CONFIG = """
behaviors:
  A:
    trainer_type: sac
    hyperparameters: {reward_signal_steps_per_update: 4.0}
  B:
    trainer_type: sac
    hyperparameters: {reward_signal_steps_per_update: 4.0}
"""


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asynctrainer" and r.levelno == logging.WARNING]


def test_the_cli_reports_a_notice_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    # An unknown env stops the run after the config (and its overrides) loaded, before anything is written.
    assert main([str(config), "--env", "Nope-v0", "--results-dir", str(tmp_path / "r"), "--run-id", "x"]) == 2
    assert len([m for m in _notices(caplog) if "reward_signal_steps_per_update" in m]) == 1, caplog.text


def test_notices_false_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    import yaml

    run_settings_from_dict(yaml.safe_load(CONFIG), notices=False)
    assert _notices(caplog) == []
