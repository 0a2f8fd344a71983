"""ML-Agents' hierarchical timer tree, kept per run and per task.

The current node lives in a context variable, so concurrent tasks nest their own timers
and a worker thread started with ``anyio.to_thread.run_sync`` (which copies the context)
nests under the task that started it. ``to_dict`` gives ML-Agents' ``timers.json`` shape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["TimerNode", "TimerTree", "hierarchical_timer"]

_lock = threading.Lock()


class TimerNode:
    __slots__ = ("children", "count", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.children: dict[str, TimerNode] = {}

    def child(self, name: str) -> TimerNode:
        with _lock:
            node = self.children.get(name)
            if node is None:
                node = self.children[name] = TimerNode()
            return node

    def to_dict(self) -> dict[str, Any]:
        with _lock:
            children = dict(self.children)
        child_total = sum(c.total for c in children.values())
        out: dict[str, Any] = {
            "total": self.total,
            "count": self.count,
            "self": max(0.0, self.total - child_total),
        }
        if children:
            out["children"] = {name: c.to_dict() for name, c in children.items()}
        return out


_current: ContextVar[TimerNode | None] = ContextVar("asynctrainer_timer", default=None)


class TimerTree:
    """One run's timers: a root node, gauges and metadata."""

    def __init__(self, name: str = "root") -> None:
        self.name = name
        self.root = TimerNode()
        self.gauges: dict[str, dict[str, float]] = {}
        self.metadata: dict[str, str] = {}
        self._start = time.perf_counter()

    def activate(self) -> None:
        """Make this tree the current one in the running context (and its child tasks)."""
        _current.set(self.root)

    def set_gauge(self, name: str, value: float) -> None:
        g = self.gauges.get(name)
        if g is None:
            self.gauges[name] = {"value": value, "min": value, "max": value, "count": 1}
        else:
            g.update(value=value, min=min(g["min"], value), max=max(g["max"], value), count=g["count"] + 1)

    def to_dict(self) -> dict[str, Any]:
        self.root.total = time.perf_counter() - self._start
        self.root.count = 1
        out = {"name": self.name, **self.root.to_dict()}
        out["gauges"] = dict(self.gauges)
        out["metadata"] = dict(self.metadata)
        return out


@contextmanager
def hierarchical_timer(name: str) -> Iterator[TimerNode | None]:
    """Time the block under ``name`` below the current timer; a no-op outside a run."""
    parent = _current.get()
    if parent is None:
        yield None
        return
    node = parent.child(name)
    token = _current.set(node)
    start = time.perf_counter()
    try:
        yield node
    finally:
        elapsed = time.perf_counter() - start
        with _lock:
            node.total += elapsed
            node.count += 1
        _current.reset(token)
