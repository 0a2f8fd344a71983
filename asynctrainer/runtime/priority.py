"""Run TensorFlow's arithmetic at background CPU priority, so acting wins every core.

On a small machine the event loop, the env thread and TensorFlow's compute threads compete for
the same cores. The loop needs a core only for a fraction of a millisecond at a time, but when
the scheduler hands it one late, every task on the loop is late. Linux's ``SCHED_IDLE`` policy
gives a thread a core only when no normal thread wants it, and a normal thread that wakes up
preempts it at once. TensorFlow's pool threads (named ``tf_*``) do an update's arithmetic
without the GIL, so they can run at that priority: learning gets whatever acting leaves over,
which is most of the machine, since acting waits for new snapshots (the lag bound).

The update thread itself stays at normal priority: it holds the GIL while it prepares an
update, and a thread holding the GIL must not be the one the scheduler postpones (the loop
would wait for it). Measured on 2 cores (``benchmarks/loop_lag.py``): the loop's steady-state
p99 lag fell from 4.5-5.2 ms to 2.8-3.6 ms with the same training speed.

``ASYNCTRAINER_LEARNER_PRIORITY``: ``idle`` (default) or ``normal`` (leave TensorFlow's threads
as they are, e.g. on a big machine). Elsewhere than Linux this is a no-op. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["learner_priority", "lower_tf_threads"]

_VALUES = ("idle", "normal")
#: Threads already looked at, and whether each was lowered.
_seen: dict[int, bool] = {}
_lock = threading.Lock()


def learner_priority() -> str:
    """The configured priority of TensorFlow's threads: ``idle`` or ``normal``.

    :raises ValueError: for any other value of ``ASYNCTRAINER_LEARNER_PRIORITY``.
    """
    value = os.environ.get("ASYNCTRAINER_LEARNER_PRIORITY", "idle").strip().lower()
    if value not in _VALUES:
        raise ValueError(f"ASYNCTRAINER_LEARNER_PRIORITY is '{value}'; allowed: {', '.join(_VALUES)}.")
    return value


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
    if not sys.platform.startswith("linux") or not hasattr(os, "SCHED_IDLE") or learner_priority() == "normal":
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
