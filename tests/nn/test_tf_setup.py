"""TensorFlow's process-wide configuration: op determinism follows ASYNCTRAINER_TF_DETERMINISM."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# TensorFlow is configured once per process, so each setting is checked in a fresh interpreter.
_PROBE = (
    "from asynctrainer.nn.tf_setup import tf\n"
    "tf()\n"
    "from tensorflow.python.framework import config\n"
    "print('determinism', config.is_op_determinism_enabled())\n"
)


@pytest.mark.parametrize(("value", "expected"), [(None, "True"), ("off", "False")])
def test_op_determinism_follows_the_variable(value: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASYNCTRAINER_TF_DETERMINISM"}
    if value is not None:
        env["ASYNCTRAINER_TF_DETERMINISM"] = value
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"determinism {expected}" in done.stdout.splitlines()
