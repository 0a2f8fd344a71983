"""Scheduling for a low-lag loop: TensorFlow's threads at background priority, a short GIL switch interval.

**CPU priority.**
On a small machine the event loop, the env thread and TensorFlow's compute threads compete for
the same cores. The loop needs a core only for a fraction of a millisecond at a time, but when
the scheduler hands it one late, every task on the loop is late. Linux's ``SCHED_IDLE`` policy
gives a thread a core only when no normal thread wants it, and a normal thread that wakes up
preempts it at once. TensorFlow's pool threads (named ``tf_*``) do an update's arithmetic
without the GIL, so they can run at that priority: learning gets whatever acting leaves over,
which is most of the machine, since acting waits for new snapshots (the lag bound).

The update thread itself stays at normal priority while it holds the GIL (preparing an update,
building a snapshot): a thread holding the GIL must not be the one the scheduler postpones, or
the loop waits for it. Only during the training call, which releases the GIL throughout, is it
lowered too (:func:`idle_while_computing`), where it may be raised back afterwards.

``ASYNCTRAINER_LEARNER_PRIORITY``: ``idle`` (default) or ``normal`` (leave TensorFlow's threads
as they are, e.g. on a big machine). Elsewhere than Linux this is a no-op.

**GIL switch interval.** A thread that wants the GIL waits up to ``sys.getswitchinterval()``
(5 ms by default) before the holder must let go, and an ``asyncio.sleep`` takes two loop
iterations, each of which may wait. :func:`gil_switch_interval` shortens it while a Runner
runs (:data:`SHORT_SWITCH_INTERVAL`, 50 µs, by default: ``Runner(switch_interval=...)``;
``None`` leaves the interpreter's setting alone) and restores it when the last Runner ends.

Why so short: that wait restarts whenever the GIL is released, even if the releasing thread
takes it straight back. TensorFlow's graph-building C calls and small file writes release the
GIL every 30–100 µs, so while a trainer traces its functions or a checkpoint is written the
loop thread is woken again and again, finds the GIL taken, and never waits long enough to ask
for it: in 21 ms of one measured stall it was woken 200 times (``perf sched timehist``) and
never got it. An interval shorter than those gaps forces the hand-off. Measured on the 2-core
VM (``benchmarks/loop_lag.py``, alternating runs): the worst lag while a PPO trainer is traced
fell from 6–200 ms (0.5 ms interval) to 1.2–2.5 ms; in training with a checkpoint every 500
steps from 7–23 ms to 7–8 ms; steady p99 from 1.9–2.1 ms to 1.6–1.9 ms; for about 3 % less
training throughput. A Runner given a longer interval still uses 50 µs while it builds its
trainers and while checkpoints are written.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from asynctrainer.errors import SettingsError

__all__ = [
    "SHORT_SWITCH_INTERVAL",
    "check_switch_interval",
    "gil_switch_interval",
    "idle_while_computing",
    "learner_priority",
    "lower_tf_threads",
    "tf_threads",
]

_VALUES = ("idle", "normal")
#: Threads already looked at, and whether each was lowered.
_seen: dict[int, bool] = {}
_lock = threading.Lock()
#: The intervals asked for by those inside :func:`gil_switch_interval`, and the one to restore after the last.
_interval_requests: list[float] = []
_interval_saved = 0.0
#: The switch interval while trainers trace their TensorFlow functions and checkpoints are
#: written: phases whose threads release the GIL in many short pieces (the module's docstring).
SHORT_SWITCH_INTERVAL = 5e-5


def learner_priority() -> str:
    """The configured priority of TensorFlow's threads: ``idle`` or ``normal``.

    :raises SettingsError: for any other value of ``ASYNCTRAINER_LEARNER_PRIORITY``.
    """
    value = os.environ.get("ASYNCTRAINER_LEARNER_PRIORITY", "idle").strip().lower()
    if value not in _VALUES:
        raise SettingsError(
            f"The environment variable ASYNCTRAINER_LEARNER_PRIORITY is '{value}'; allowed: {', '.join(_VALUES)}.",
            key_path="ASYNCTRAINER_LEARNER_PRIORITY",
        )
    return value


def tf_threads() -> int:
    """TensorFlow's intra-op and inter-op pool size: ``ASYNCTRAINER_TF_THREADS``, 1 by default.

    :raises SettingsError: unless the variable is unset or a positive whole number.
    """
    return _positive_int_env("ASYNCTRAINER_TF_THREADS", 1, "threads per TensorFlow pool")


def acting_threads() -> int:
    """Threads of the onnxruntime sessions that encode images for acting: ``ASYNCTRAINER_ACTING_THREADS``.

    By default 2 (or 1 on a one-core machine): on a 2-core machine two threads act on a batch of
    64 camera images about 1.6 times as fast as one, and the threads sleep (no spinning) between
    calls, so the learner's thread keeps its core.

    :raises SettingsError: unless the variable is unset or a positive whole number.
    """
    return _positive_int_env("ASYNCTRAINER_ACTING_THREADS", min(2, os.cpu_count() or 1), "threads per acting session")


def _positive_int_env(name: str, default: int, what: str) -> int:
    raw = os.environ.get(name, str(default)).strip()
    if not (raw.isdigit() and int(raw) >= 1):
        raise SettingsError(
            f"The environment variable {name} is {raw!r}; allowed: a positive whole number "
            f"({what}), e.g. {default} (the default) or 4.",
            key_path=name,
        )
    return int(raw)


def tf_determinism() -> bool:
    """Whether TensorFlow's op determinism is switched on: ``ASYNCTRAINER_TF_DETERMINISM``, ``on`` by default.

    On, a seeded ``strict_on_policy`` run repeats exactly; ``off`` leaves TensorFlow's default
    (non-deterministic kernels, faster on GPUs, and a host's own TensorFlow code unaffected).

    :raises SettingsError: for any value other than ``on`` or ``off``.
    """
    value = os.environ.get("ASYNCTRAINER_TF_DETERMINISM", "on").strip().lower()
    if value not in ("on", "off"):
        raise SettingsError(
            f"The environment variable ASYNCTRAINER_TF_DETERMINISM is {value!r}; allowed: on (the default), off.",
            key_path="ASYNCTRAINER_TF_DETERMINISM",
        )
    return value == "on"


def _lowering_enabled() -> bool:
    """Linux (``SCHED_IDLE`` exists) and ``ASYNCTRAINER_LEARNER_PRIORITY`` is not ``normal``."""
    return sys.platform.startswith("linux") and hasattr(os, "SCHED_IDLE") and learner_priority() == "idle"


def _set_idle(tid: int) -> bool:
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # the thread is gone, or not ours to change
        return False
    return True


def lower_tf_threads() -> int:
    """Put this process's TensorFlow pool threads (named ``tf_*``) at ``SCHED_IDLE``.

    Cheap enough to call after every update: it lists ``/proc/self/task`` and reads the name
    only of threads it has not seen before. Returns how many live threads it has lowered.
    """
    if not _lowering_enabled():
        return 0
    try:
        tids = {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return 0
    with _lock:
        for tid in tids - _seen.keys():
            try:
                with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as f:
                    name = f.read().strip()
            except OSError:
                continue
            _seen[tid] = name.startswith("tf_") and _set_idle(tid)
        for tid in _seen.keys() - tids:
            del _seen[tid]
        return sum(_seen.values())


def check_switch_interval(seconds: float | None) -> None:
    """:raises SettingsError: unless ``seconds`` is None or a positive number up to 1 s."""
    if seconds is not None and not (isinstance(seconds, int | float) and 0 < seconds <= 1.0):
        raise SettingsError(
            f"switch_interval is {seconds!r}; allowed: None (leave the interpreter's setting) or seconds "
            "in (0, 1], e.g. 0.00005.",
            key_path="switch_interval",
        )


@contextmanager
def gil_switch_interval(seconds: float | None) -> Iterator[None]:
    """Run the body with ``sys.setswitchinterval(seconds)``; ``None`` changes nothing.

    :raises SettingsError: for a value :func:`check_switch_interval` refuses.

    Nested and concurrent uses (several Runners, a Runner building its trainers) combine: the
    shortest interval asked for by those inside applies, and the interpreter's own comes back
    when the last of them ends.
    """
    global _interval_saved
    if seconds is None:
        yield
        return
    check_switch_interval(seconds)
    with _lock:
        if not _interval_requests:
            _interval_saved = sys.getswitchinterval()
        _interval_requests.append(seconds)
        sys.setswitchinterval(min(_interval_requests))
    try:
        yield
    finally:
        with _lock:
            _interval_requests.remove(seconds)
            sys.setswitchinterval(min(_interval_requests) if _interval_requests else _interval_saved)


_may_leave_idle: bool | None = None


def _probe_leave_idle() -> bool:
    """Whether a thread of this process may go back from ``SCHED_IDLE`` to its policy.

    Unprivileged threads may not (``RLIMIT_NICE`` is 0 by default), nor may root without
    ``CAP_SYS_NICE`` (most containers). Tried once, on a throwaway thread.
    """
    result: list[bool] = []

    def probe() -> None:
        tid = threading.get_native_id()
        try:
            policy, param = os.sched_getscheduler(tid), os.sched_getparam(tid)
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(tid, policy, param)
        except OSError:
            result.append(False)
        else:
            result.append(True)

    thread = threading.Thread(target=probe, name="asynctrainer-sched-probe", daemon=True)
    thread.start()
    thread.join()
    return bool(result and result[0])


@contextmanager
def idle_while_computing() -> Iterator[None]:
    """Run the body with the calling thread at ``SCHED_IDLE``, then restore its policy.

    For a call into TensorFlow that releases the GIL for its whole length (a training step):
    the kernels TensorFlow runs inline on the calling thread then yield the core like its pool
    threads do. Not for code that holds the GIL: a thread the scheduler postpones while it
    holds the GIL makes the loop wait for it. A no-op where the thread could not get its
    policy back afterwards (it is a shared worker thread that also steps envs).
    """
    global _may_leave_idle
    if not _lowering_enabled():
        yield
        return
    if _may_leave_idle is None:
        _may_leave_idle = _probe_leave_idle()
    tid = threading.get_native_id()
    try:
        policy, param = os.sched_getscheduler(tid), os.sched_getparam(tid)
    except OSError:
        policy = os.SCHED_IDLE
    lowered = _may_leave_idle and policy != os.SCHED_IDLE and _set_idle(tid)
    try:
        yield
    finally:
        if lowered:
            with suppress(OSError):
                os.sched_setscheduler(tid, policy, param)
