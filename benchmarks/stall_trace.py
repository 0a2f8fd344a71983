"""Find what stalls the loop: a watchdog thread that records every thread's stack when it wakes late.

A thread that holds the GIL through a long C call (or the loop thread running a slow callback)
keeps every other Python thread waiting. The watchdog sleeps ``period`` at a time; when it
wakes more than ``threshold`` late it records the innermost frames of every other thread. The
culprit has only just let go of the GIL, so its stack still shows the call that held it.

It also records how much CPU time every thread of the process (TensorFlow's native ones
included) used during the stall, and the machine's steal time: a stall in which no thread of
ours ran is the machine's (a hypervisor, another process), not a held GIL.

Diagnostic only: the watchdog itself competes for the GIL, so measure lag without it.

    with StallTrace() as trace:
        ...  # train
    print(trace.report())
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import Counter
from types import TracebackType

__all__ = ["StallTrace", "steal_ms"]


class StallTrace:
    def __init__(self, period: float = 0.001, threshold: float = 0.004, depth: int = 10) -> None:
        self.period = period
        self.threshold = threshold
        self.depth = depth
        self.stalls: list[tuple[float, float, dict[str, list[str]]]] = []
        #: Per stall: CPU ms of each busy thread during it, and the machine's steal ms.
        self.cpu: list[tuple[dict[str, float], float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-trace", daemon=True)
        self._t0 = time.perf_counter()

    def __enter__(self) -> StallTrace:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        me = threading.get_ident()
        before = _thread_cpu()
        steal_before = steal_ms()
        while not self._stop.is_set():
            start = time.perf_counter()
            time.sleep(self.period)
            late = time.perf_counter() - start - self.period
            after = _thread_cpu()
            steal_after = steal_ms()
            if late < self.threshold:
                before, steal_before = after, steal_after
                continue
            used = {
                name: (ns - before.get(tid, (name, ns))[1]) / 1e6
                for tid, (name, ns) in after.items()
                if ns - before.get(tid, (name, ns))[1] > 100_000
            }
            self.cpu.append((used, steal_after - steal_before))
            before, steal_before = after, steal_after
            names = {t.ident: f"{t.name}:{t.native_id}" for t in threading.enumerate()}
            stacks = {}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                lines = [
                    f"{fs.filename.rsplit('/', 2)[-1]}:{fs.lineno} {fs.name}: {fs.line}"
                    for fs in traceback.extract_stack(frame)[-self.depth :]
                ]
                stacks[names.get(ident, str(ident))] = lines
            self.stalls.append((start - self._t0, late * 1000.0, stacks))

    def _ours(self, i: int) -> str | None:
        """The Python thread that ran through most of stall ``i`` while the machine stole no CPU, if one did.

        Only a thread running Python can hold the GIL (TensorFlow's native threads run at idle
        priority and hold nothing the loop needs); with steal time in the window, a thread that
        ran on may only have had the one live core to itself.
        """
        _, ms, stacks = self.stalls[i]
        used, steal = self.cpu[i]
        ran = {name: cpu for name, cpu in used.items() if name in stacks}
        name, cpu = max(ran.items(), key=lambda kv: kv[1], default=("", 0.0))
        return name if cpu >= 0.6 * ms and steal == 0 else None

    def classify(self) -> str:
        """How many stalls a thread of ours ran through (most of the stall), how many the machine's."""
        owners = [self._ours(i) for i in range(len(self.stalls))]
        ours = sum(owner is not None for owner in owners)
        machine = sum(owner is None and steal > 0 for owner, (_, steal) in zip(owners, self.cpu, strict=True))
        other = len(owners) - ours - machine
        return f"{ours} where a Python thread of ours ran through it, {machine} with steal time, {other} neither"

    def report(self, top: int = 8) -> str:
        """The longest stalls a thread of ours ran through, with its stack; then the longest overall."""
        out = [f"{len(self.stalls)} stalls over {self.threshold * 1000:.1f} ms: " + self.classify()]
        order = sorted(range(len(self.stalls)), key=lambda i: -self.stalls[i][1])
        ours = [(i, name) for i in order if (name := self._ours(i)) is not None]
        out.append("--- longest stalls a thread of ours ran through (its stack as the stall ended):")
        for i, name in ours[:top]:
            at, ms, stacks = self.stalls[i]
            out.append(f"  {ms:.1f} ms at t={at:.2f} s: {self._cpu_line(i)}")
            out.extend(f"      {line}" for line in stacks.get(name, []))
        out.append("--- longest stalls overall:")
        for i in order[:top]:
            out.append(f"  {self.stalls[i][1]:.1f} ms at t={self.stalls[i][0]:.2f} s: {self._cpu_line(i)}")
        where = Counter(self.stalls[i][2][name][-1] for i, name in ours if self.stalls[i][2].get(name))
        out.append("--- where our threads were when the stalls they ran through ended:")
        out.extend(f"  {n:>4}  {line}" for line, n in where.most_common(top))
        return "\n".join(out)

    def _cpu_line(self, i: int) -> str:
        used, steal = self.cpu[i]
        busy = ", ".join(f"{n} {v:.1f}" for n, v in sorted(used.items(), key=lambda kv: -kv[1]))
        return f"CPU ms {busy or 'none'}; steal {steal:.0f} ms"


def _thread_cpu() -> dict[int, tuple[str, int]]:
    """CPU time (ns) of every thread of this process, by native id, with its name (Linux only)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for t in tids:
        tid = int(t)
        try:
            # The kernel's per-thread CPU clock id for a thread id: MAKE_THREAD_CPUCLOCK(tid, SCHED).
            ns = time.clock_gettime_ns(((~tid) << 3) | 6)
            name = _names.get(tid) or _name(tid)
        except OSError:
            continue
        out[tid] = (name, ns)
    return out


_names: dict[int, str] = {}


def _name(tid: int) -> str:
    python = {t.native_id: t.name for t in threading.enumerate()}
    if tid in python:
        name = _names[tid] = f"{python[tid]}:{tid}"
        return name
    with open(f"/proc/self/task/{tid}/comm") as f:
        comm = f.read().strip()
    name = f"{comm}:{tid}"
    if comm != "python":  # a native thread with its own name; an unnamed one may be a Python thread starting
        _names[tid] = name
    return name


def steal_ms() -> float:
    """The machine's steal time so far (all CPUs), in ms; 0 where /proc/stat has none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return float(fields[8]) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
