"""Instance-scoped stats with ML-Agents' names, summarised per behavior.

A :class:`StatsReporter` collects values for one behavior and, at each summary, hands a
:class:`StatsSummaryRecord` to a sink. The runner's sink queues records for a writer task
that runs the writers (console, TensorBoard) in a worker thread, off the event loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "ConsoleWriter",
    "MemoryWriter",
    "StatsReporter",
    "StatsSummary",
    "StatsSummaryRecord",
    "StatsWriter",
    "TensorboardWriter",
]

logger = logging.getLogger("asynctrainer")


Aggregation = Literal["average", "most_recent", "sum", "histogram"]


@dataclass(frozen=True)
class StatsSummary:
    """The values of one stat since the last summary; ``value`` is what writers show."""

    mean: float
    std: float
    count: int
    total: float
    aggregation: Aggregation = "average"

    @classmethod
    def of(cls, values: list[float], aggregation: Aggregation = "average") -> StatsSummary:
        if not values:
            return cls(math.nan, math.nan, 0, 0.0, aggregation)
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / n
        return cls(mean, math.sqrt(var), n, sum(values), aggregation)

    @property
    def value(self) -> float:
        """The sum for a ``sum`` stat, else the mean (a ``most_recent`` stat holds one value)."""
        return self.total if self.aggregation == "sum" else self.mean


@dataclass(frozen=True)
class StatsSummaryRecord:
    """Everything one summary writes: behavior, step, wall time and the summarised stats."""

    category: str
    step: int
    elapsed: float
    values: Mapping[str, StatsSummary]
    is_training: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


class StatsWriter(Protocol):
    def write_stats(self, record: StatsSummaryRecord) -> None: ...

    def close(self) -> None: ...


#: Summaries a :class:`StatsReporter` keeps in ``history`` (the newest; a run of any length
#: holds at most this many, a few MiB, so a server that trains for weeks does not grow: at a
#: summary every 2 s, the last half hour). Every summary also goes to the run's stats writers.
HISTORY_LIMIT = 1_000


class StatsReporter:
    """Collects one behavior's stats between summaries (not shared between instances).

    :ivar history: the summaries written so far, oldest first: the newest :data:`HISTORY_LIMIT`.
    """

    def __init__(self, category: str, sink: Callable[[StatsSummaryRecord], None] | None = None) -> None:
        self.category = category
        self.sink = sink
        self._values: dict[str, list[float]] = defaultdict(list)
        self._aggregation: dict[str, Aggregation] = {}
        self._start = time.monotonic()
        self.history: deque[StatsSummaryRecord] = deque(maxlen=HISTORY_LIMIT)

    def add_stat(self, key: str, value: float) -> None:
        self._values[key].append(float(value))

    def set_stat(self, key: str, value: float) -> None:
        self._values[key] = [float(value)]

    def record(self, key: str, value: float, aggregation: Aggregation) -> None:
        """Add a value summarised as ``aggregation`` says (ML-Agents' StatsAggregationMethod).

        ``most_recent`` keeps the last value, ``sum`` sums the values of a summary period, and
        ``average`` and ``histogram`` average them (histograms are written as their mean).
        """
        self._aggregation[key] = aggregation
        if aggregation == "most_recent":
            self.set_stat(key, value)
        else:
            self.add_stat(key, value)

    def get_stats_summaries(self, key: str) -> StatsSummary:
        return StatsSummary.of(self._values.get(key, []), self._aggregation.get(key, "average"))

    def write_stats(self, step: int) -> StatsSummaryRecord:
        """Summarise and clear everything collected since the last summary, and send it to the sink."""
        values = {k: StatsSummary.of(v, self._aggregation.get(k, "average")) for k, v in self._values.items() if v}
        training = values.get("Is Training")
        record = StatsSummaryRecord(
            self.category,
            step,
            time.monotonic() - self._start,
            values,
            is_training=training is None or training.mean > 0,
        )
        self._values.clear()
        self.history.append(record)
        if self.sink is not None:
            self.sink(record)
        return record


REWARD_KEY = "Environment/Cumulative Reward"


def console_line(record: StatsSummaryRecord) -> str:
    """ML-Agents' summary line, e.g. ``CartPole. Step: 5000. Time Elapsed: 12.345 s. Mean Reward: ...``."""
    parts = [record.category, f"Step: {record.step}", f"Time Elapsed: {record.elapsed:0.3f} s"]
    reward = record.values.get(REWARD_KEY)
    if reward is not None and reward.count > 0:
        parts += [f"Mean Reward: {reward.mean:0.3f}", f"Std of Reward: {reward.std:0.3f}"]
    else:
        parts.append("No episode was completed since last summary")
    elo = record.values.get("Self-play/ELO")
    if elo is not None and elo.count > 0:
        parts.append(f"ELO: {elo.mean:0.3f}")
    parts.append("Training" if record.is_training else "Not Training")
    return ". ".join(parts) + "."


class MemoryWriter:
    """Keeps every summary in :attr:`records` (for notebooks and tests that look at a run's stats)."""

    def __init__(self) -> None:
        self.records: list[StatsSummaryRecord] = []

    def write_stats(self, record: StatsSummaryRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


class ConsoleWriter:
    """Logs one line per summary through the ``asynctrainer`` logger (INFO)."""

    def __init__(self, emit: Callable[[str], None] | None = None) -> None:
        self._emit = emit or logger.info

    def write_stats(self, record: StatsSummaryRecord) -> None:
        self._emit(console_line(record))

    def close(self) -> None:
        pass


class TensorboardWriter:
    """Writes event files to ``<base_dir>/<behavior>/`` with tensorboardX (no TensorFlow needed)."""

    def __init__(self, base_dir: Path, *, clear_past_data: bool = True) -> None:
        self.base_dir = Path(base_dir)
        self.clear_past_data = clear_past_data
        self._writers: dict[str, Any] = {}

    def _writer(self, category: str) -> Any:
        w = self._writers.get(category)
        if w is None:
            from tensorboardX import SummaryWriter

            path = self.base_dir / category
            path.mkdir(parents=True, exist_ok=True)
            if self.clear_past_data:
                for old in path.glob("events.out.tfevents*"):
                    old.unlink()
            w = self._writers[category] = SummaryWriter(str(path), flush_secs=30)
        return w

    def write_stats(self, record: StatsSummaryRecord) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        w = self._writer(record.category)
        # Written as protos, not add_scalar, to keep ML-Agents' stat names (with spaces) exact.
        values = [Summary.Value(tag=k, simple_value=s.value) for k, s in record.values.items() if s.count]
        w._get_file_writer().add_summary(Summary(value=values), record.step)
        w.flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()
