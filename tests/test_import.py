from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_import_asynctrainer_imports_no_tensorflow() -> None:
    code = (
        "import sys, asynctrainer, asynctrainer.runtime.runner, asynctrainer.settings, asynctrainer.testing.fakes;"
        "import asynctrainer.envs.gymnasium_env, asynctrainer.cli;"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("package", ["asynctrainer", "asynctrainer.envs", "asynctrainer.testing"])
def test_every_public_name_resolves_and_all_is_sorted(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_simple_environment_imports_only_numpy_and_the_env_specs() -> None:
    # benchmarks/mlagents_worker.py loads it in ML-Agents' venv (numpy 1.23, protobuf 3).
    code = (
        "import sys, asynctrainer.testing.simple_env;"
        "print(sorted(m for m in sys.modules if m.startswith(('asynctrainer.', 'google.protobuf', 'pydantic'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    expected = ["asynctrainer.envs", "asynctrainer.envs.spec", "asynctrainer.errors", "asynctrainer.lazy"]
    assert out == str([*expected, "asynctrainer.testing", "asynctrainer.testing.simple_env"])


def test_preload_imports_tensorflow_keras_and_the_trainers_up_front() -> None:
    code = (
        "import sys, asynctrainer;"
        "before = 'tensorflow' in sys.modules;"
        "asynctrainer.preload();"
        "print(before, all(m in sys.modules for m in "
        "('tensorflow', 'keras', 'onnx', 'gymnasium.vector', 'asynctrainer.ppo.trainer', 'asynctrainer.sac.trainer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_preload_stays_the_function_after_its_module_is_imported() -> None:
    import asynctrainer
    import asynctrainer.startup

    assert callable(asynctrainer.preload) and asynctrainer.preload.__module__ == "asynctrainer.startup"


def test_preload_without_the_export_extra_still_loads_the_rest() -> None:
    # onnx blocked as if not installed: preload skips the ONNX warm-up; the first export will say so.
    code = (
        "import sys; sys.modules['onnx'] = None;"
        "import asynctrainer; asynctrainer.preload();"
        "print('tensorflow' in sys.modules, 'asynctrainer.ppo.trainer' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]
