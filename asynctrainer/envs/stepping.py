"""Where a Python env's steps run: in a worker thread, or on the loop while they are fast.

A step in a worker thread costs the hand-off: the thread wakes, takes the GIL from whoever
holds it, and wakes the loop again through its self-pipe. On the 2-core VM that is 0.2–0.3 ms
a step beside an update, two to three times what eight CartPoles cost to step (76–143 µs),
and the thread competes with the update's for a core. A step shorter than the loop's latency
budget can run on the loop itself instead: the loop is then late by at most that step.

:class:`StepPlacement` measures the CPU time of every step (its thread's: not the time it
waited for a core or for the GIL, which the loop waits too wherever the step runs) and keeps
their running mean (an exponential
average over about ``window`` steps). It starts in the thread; once ``window`` steps were
measured and the mean is under ``inline_below``, the steps run on the loop (each followed by
a checkpoint, so other tasks run between steps). They go back to the thread when the mean
rises over ``inline_below`` again, or at once when one step on the loop takes longer than
``slow_step`` (the loop's latency budget); the next move to the loop then needs twice as
many measured steps (at most 2**10 times ``window``), so an env that is sometimes slow stays
in the thread. Resets, which may load levels, always run in the thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.lowlevel

__all__ = ["DEFAULT_INLINE_BELOW", "SLOW_STEP", "StepPlacement"]

T = TypeVar("T")
#: Steps whose mean time (seconds) is under this may run on the loop.
DEFAULT_INLINE_BELOW = 3e-4
#: One step on the loop longer than this (seconds) sends the steps back to the thread.
SLOW_STEP = 2e-3
_MAX_BACKOFF = 10


class StepPlacement:
    """Runs an env's steps in a worker thread or on the loop, by their measured duration.

    :param inline_below: the mean step time, in seconds, under which steps may run on the loop
        (None: always the thread).
    :param window: the steps the mean is taken over, and the fewest measured before a move.
    :param slow_step: one step on the loop longer than this (seconds) sends them back at once.
    """

    def __init__(
        self, inline_below: float | None = DEFAULT_INLINE_BELOW, window: int = 32, slow_step: float = SLOW_STEP
    ) -> None:
        self.inline_below = inline_below
        self.window = window
        self.slow_step = slow_step
        self.on_loop = False
        #: times the steps moved back to the thread
        self.fallbacks = 0
        #: the running mean of the step times, seconds
        self.mean = 0.0
        self._measured = 0

    async def step(self, fn: Callable[[], T]) -> T:
        """``fn()`` (an env step) where its duration allows; returns its result."""
        limit = self.inline_below
        if limit is None:
            return await anyio.to_thread.run_sync(fn)
        if self.on_loop:
            start = time.thread_time()
            result = fn()
            took = time.thread_time() - start
            self._measure(took)
            if took > self.slow_step or self.mean > limit:
                self.on_loop, self._measured = False, 0
                self.fallbacks += 1
            await anyio.lowlevel.checkpoint()
            return result
        result, took = await anyio.to_thread.run_sync(_timed, fn)
        self._measure(took)
        if self._measured >= self.window << min(self.fallbacks, _MAX_BACKOFF) and self.mean < limit:
            self.on_loop = True
        return result

    def _measure(self, took: float) -> None:
        self._measured += 1
        weight = 1.0 / min(self._measured, self.window)
        self.mean += weight * (took - self.mean)

    @staticmethod
    async def reset(fn: Callable[[], T]) -> T:
        """``fn()`` (an env reset) in the worker thread."""
        return await anyio.to_thread.run_sync(fn)


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.thread_time()
    result = fn()
    return result, time.thread_time() - start
