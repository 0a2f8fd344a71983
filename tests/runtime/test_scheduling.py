"""Scheduling helpers (runtime/scheduling.py): real threads and the real interpreter, no TensorFlow."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from asynctrainer import Runner
from asynctrainer.errors import SettingsError
from asynctrainer.runtime import scheduling
from asynctrainer.runtime.scheduling import (
    SHORT_SWITCH_INTERVAL,
    gil_switch_interval,
    idle_while_computing,
    learner_priority,
    lower_tf_threads,
)
from asynctrainer.testing import make_run_settings
from asynctrainer.testing.fakes import CountingEnv, fake_trainer_factory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
PR_SET_NAME = 15


def _named_thread(name: bytes, ready: threading.Event, release: threading.Event, tid: list[int]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)  # the OS-level name TF gives its threads
    tid.append(threading.get_native_id())
    ready.set()
    release.wait(10)


@pytest.fixture
def os_named_threads() -> Iterator[dict[bytes, int]]:
    """Two real threads named at the OS level: one like TensorFlow's pool threads, one not."""
    release = threading.Event()
    tids: dict[bytes, int] = {}
    threads = []
    for name in (b"tf_Compute", b"not_tf"):
        ready, tid = threading.Event(), []  # type: ignore[var-annotated]
        thread = threading.Thread(target=_named_thread, args=(name, ready, release, tid), daemon=True)
        thread.start()
        assert ready.wait(5)
        tids[name] = tid[0]
        threads.append(thread)
    yield tids
    release.set()
    for thread in threads:
        thread.join(5)


@linux_only
def test_lower_tf_threads_puts_only_tf_named_threads_at_sched_idle(
    os_named_threads: dict[bytes, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNCTRAINER_LEARNER_PRIORITY", raising=False)
    assert lower_tf_threads() >= 1
    assert os.sched_getscheduler(os_named_threads[b"tf_Compute"]) == os.SCHED_IDLE
    assert os.sched_getscheduler(os_named_threads[b"not_tf"]) == os.SCHED_OTHER
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER


@linux_only
def test_normal_priority_leaves_every_thread_alone(
    os_named_threads: dict[bytes, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCTRAINER_LEARNER_PRIORITY", "normal")
    assert lower_tf_threads() == 0
    assert os.sched_getscheduler(os_named_threads[b"tf_Compute"]) == os.SCHED_OTHER


def test_bad_learner_priority_names_the_variable_and_the_allowed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCTRAINER_LEARNER_PRIORITY", "realtime")
    with pytest.raises(SettingsError, match="ASYNCTRAINER_LEARNER_PRIORITY is 'realtime'; allowed: idle, normal"):
        learner_priority()
    with pytest.raises(SettingsError, match="ASYNCTRAINER_LEARNER_PRIORITY"):
        Runner(make_run_settings(), CountingEnv(), trainer_factory=fake_trainer_factory(), stats_writers=[])


@pytest.mark.parametrize("variable", ["ASYNCTRAINER_TF_DETERMINISM", "ASYNCTRAINER_TF_THREADS"])
def test_a_bad_tensorflow_variable_fails_when_the_runner_is_built(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "sometimes")
    with pytest.raises(SettingsError, match=variable) as info:
        Runner(make_run_settings(), CountingEnv(), trainer_factory=fake_trainer_factory(), stats_writers=[])
    assert info.value.key_path == variable


def test_tf_determinism_is_on_by_default_and_off_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCTRAINER_TF_DETERMINISM", raising=False)
    assert scheduling.tf_determinism() is True
    for value, expected in (("on", True), (" OFF ", False), ("off", False)):
        monkeypatch.setenv("ASYNCTRAINER_TF_DETERMINISM", value)
        assert scheduling.tf_determinism() is expected
    monkeypatch.setenv("ASYNCTRAINER_TF_DETERMINISM", "1")
    with pytest.raises(SettingsError, match=r"ASYNCTRAINER_TF_DETERMINISM is '1'; allowed: on \(the default\), off"):
        scheduling.tf_determinism()


def test_switch_interval_is_the_shortest_asked_for_and_restored_after_the_last_user() -> None:
    before = sys.getswitchinterval()
    with gil_switch_interval(0.0005):
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        with gil_switch_interval(0.001):
            assert sys.getswitchinterval() == pytest.approx(0.0005), "a longer request does not lengthen it"
            with gil_switch_interval(0.00005):
                assert sys.getswitchinterval() == pytest.approx(0.00005)
            assert sys.getswitchinterval() == pytest.approx(0.0005)
        # The outer user is still inside: the interpreter's value is not back yet.
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before
    with gil_switch_interval(None):
        assert sys.getswitchinterval() == before


@pytest.mark.parametrize("bad", [0, -0.001, 2.0, "fast"])
def test_bad_switch_interval_is_refused_before_anything_runs(bad: object) -> None:
    with pytest.raises(SettingsError, match=r"switch_interval is .*; allowed: None"):
        Runner(
            make_run_settings(),
            CountingEnv(),
            trainer_factory=fake_trainer_factory(),
            switch_interval=bad,  # type: ignore[arg-type]
        )


def _recording_factory(building: list[float], updating: list[float]) -> Any:
    """Fake trainers that note the switch interval when built (where a real trainer traces) and at each update."""
    fakes = fake_trainer_factory(on_update=lambda trainer: updating.append(sys.getswitchinterval()))

    def factory(*args: Any) -> Any:
        trainer = fakes(*args)
        create = trainer.create_policy

        def create_policy(*a: Any) -> Any:
            building.append(sys.getswitchinterval())
            return create(*a)

        trainer.create_policy = create_policy
        return trainer

    return factory


async def test_runner_uses_its_switch_interval_while_it_runs_and_restores_it() -> None:
    before = sys.getswitchinterval()
    building: list[float] = []
    seen: list[float] = []
    runner = Runner(
        make_run_settings(max_steps=100),
        CountingEnv(),
        trainer_factory=_recording_factory(building, seen),
        stats_writers=[],
        switch_interval=0.0007,
    )
    await runner.run()
    assert building == [pytest.approx(SHORT_SWITCH_INTERVAL)]
    assert seen and all(value == pytest.approx(0.0007) for value in seen)
    assert sys.getswitchinterval() == before


async def test_switch_interval_none_is_left_alone_while_building_trainers_too() -> None:
    before = sys.getswitchinterval()
    building: list[float] = []
    seen: list[float] = []
    runner = Runner(
        make_run_settings(max_steps=100),
        CountingEnv(),
        trainer_factory=_recording_factory(building, seen),
        stats_writers=[],
        switch_interval=None,
    )
    await runner.run()
    assert building == [before]
    assert seen and all(value == before for value in seen)
    assert sys.getswitchinterval() == before


def _policies_in_a_thread() -> tuple[int, int, int]:
    """(before, inside, after) scheduling policy of a fresh thread around idle_while_computing."""
    seen: list[int] = []

    def body() -> None:
        tid = threading.get_native_id()
        seen.append(os.sched_getscheduler(tid))
        with idle_while_computing():
            seen.append(os.sched_getscheduler(tid))
        seen.append(os.sched_getscheduler(tid))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    return seen[0], seen[1], seen[2]


@linux_only
def test_idle_while_computing_lowers_the_thread_and_gives_its_policy_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCTRAINER_LEARNER_PRIORITY", raising=False)
    before, inside, after = _policies_in_a_thread()
    assert before == after == os.SCHED_OTHER
    if scheduling._probe_leave_idle():
        assert inside == os.SCHED_IDLE
    else:  # not allowed back (no CAP_SYS_NICE): a shared worker thread must not stay lowered
        assert inside == os.SCHED_OTHER


@linux_only
def test_idle_while_computing_does_nothing_at_normal_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCTRAINER_LEARNER_PRIORITY", "normal")
    assert _policies_in_a_thread() == (os.SCHED_OTHER, os.SCHED_OTHER, os.SCHED_OTHER)
