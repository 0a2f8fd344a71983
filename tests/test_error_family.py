"""Every error a user can meet is an AsyncTrainerError: one paragraph from the CLI, one ``except`` in a host."""

from __future__ import annotations

import ast
import builtins
import importlib.util
from pathlib import Path

import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import AsyncTrainerError, ExportError, SettingsError, UsageError
from asynctrainer.runtime.channels import open_trajectory_channel
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.runtime.scheduling import tf_threads
from asynctrainer.testing import make_run_settings
from asynctrainer.testing.fakes import FakeTrainer

PACKAGE = Path(__file__).resolve().parents[1] / "asynctrainer"
SPEC = BehaviorSpec((ObservationSpec((3,)),), ActionSpec.create_discrete((2,)))

#: Built-in exceptions the package may raise, by module, and why no user meets them as such.
INTERNAL: dict[str, set[str]] = {
    # module ``__getattr__`` protocol (lazy public API): Python turns it into an ImportError/AttributeError.
    "asynctrainer/__init__.py": {"AttributeError"},
    # pure math on arrays the trainer itself shapes: an internal invariant, not input.
    "asynctrainer/ppo/gae.py": {"ValueError"},
    "asynctrainer/ppo/loss.py": {"ValueError"},
    "asynctrainer/sac/loss.py": {"ValueError"},
    "asynctrainer/sac/replay_buffer.py": {"ValueError"},
    # array names are the trainers' own state keys, fixed in code.
    "asynctrainer/checkpoints/format.py": {"ValueError"},
    # abstract hooks a subclass must provide.
    "asynctrainer/runtime/trainer.py": {"NotImplementedError"},
    # the CLI's own way to report a stop by signal (its exit code, never printed as an error).
    "asynctrainer/cli.py": {"KeyboardInterrupt"},
    # test helpers: they fail the user's test, as pytest expects.
    "asynctrainer/testing/fakes.py": {"RuntimeError"},
    "asynctrainer/testing/simple_env.py": {"ValueError"},
}


def _builtin_raises() -> set[tuple[str, str]]:
    """``(module, exception)`` for every ``raise`` of a built-in exception class in the package."""
    found: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name):
                obj = getattr(builtins, target.id, None)
                if isinstance(obj, type) and issubclass(obj, BaseException):
                    found.add((rel, target.id))
    return found


def test_every_builtin_exception_the_package_raises_is_an_internal_invariant() -> None:
    raised = _builtin_raises()
    assert ("asynctrainer/runtime/trainer.py", "NotImplementedError") in raised, "the walk finds raises"
    escaping = sorted((m, e) for m, e in raised if e not in INTERNAL.get(m, set()))
    assert escaping == [], "raise an AsyncTrainerError subclass naming what was wrong and what is allowed"


def test_every_error_class_the_package_defines_is_in_the_family() -> None:
    defined: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (node.name.endswith("Error") or node.name.endswith("Exception")):
                defined.append(f"{path.relative_to(PACKAGE.parent).as_posix()}:{node.name}")
    outside: list[str] = []
    for entry in defined:
        rel, name = entry.split(":")
        module_name = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        if importlib.util.find_spec(module_name) is None:  # pragma: no cover - every module is importable
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an optional extra (ray) is missing: nothing of it can be raised
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, AsyncTrainerError):
            outside.append(entry)
    assert "asynctrainer/errors.py:SettingsError" in defined
    assert outside == []


def test_policy_slot_latest_before_any_publish_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'Walker'"):
        PolicySlot("Walker").latest()


async def test_a_second_trajectory_channel_for_one_trainer_is_a_usage_error() -> None:
    trainer = FakeTrainer("Counter", make_run_settings().trainer_settings_for("Counter"))
    send_a, receive_a = open_trajectory_channel(2)
    send_b, receive_b = open_trajectory_channel(2)
    trainer.subscribe_trajectory_queue(receive_a)
    with pytest.raises(UsageError, match="clone"):
        trainer.subscribe_trajectory_queue(receive_b)
    assert trainer.trajectory_queues == [receive_a]
    for end in (send_a, send_b, receive_a, receive_b):
        end.close()


@pytest.mark.parametrize("value", ["four", "0", "-2", "1.5", ""])
def test_a_bad_tf_threads_variable_is_a_settings_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCTRAINER_TF_THREADS", value)
    with pytest.raises(SettingsError, match=r"ASYNCTRAINER_TF_THREADS.*positive whole number") as info:
        tf_threads()
    assert info.value.key_path == "ASYNCTRAINER_TF_THREADS"


def test_tf_threads_default_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCTRAINER_TF_THREADS", raising=False)
    assert tf_threads() == 1
    monkeypatch.setenv("ASYNCTRAINER_TF_THREADS", " 6 ")
    assert tf_threads() == 6


def test_export_onnx_without_onnx_is_an_export_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from asynctrainer.export.onnx import export_onnx
    from asynctrainer.testing.fakes import random_snapshot

    monkeypatch.setitem(sys.modules, "onnx", None)  # ``import onnx`` now raises ImportError
    with pytest.raises(ExportError, match=r"asynctrainer\[export\]"):
        export_onnx(random_snapshot("Walker", SPEC), "/nonexistent/never-written.onnx")
