from __future__ import annotations

from pathlib import Path

from asynctrainer.runtime.stats import (
    HISTORY_LIMIT,
    ConsoleWriter,
    StatsReporter,
    StatsSummaryRecord,
    TensorboardWriter,
    console_line,
)
from asynctrainer.testing.tensorboard import read_scalars


def test_reporter_summarises_clears_and_sends_to_the_sink() -> None:
    got: list[StatsSummaryRecord] = []
    reporter = StatsReporter("CartPole", got.append)
    for r in (1.0, 2.0, 3.0):
        reporter.add_stat("Environment/Cumulative Reward", r)
    reporter.set_stat("Is Training", 1.0)
    record = reporter.write_stats(500)
    assert got == [record]
    summary = record.values["Environment/Cumulative Reward"]
    assert (summary.mean, summary.count) == (2.0, 3)
    assert reporter.write_stats(1000).values == {}, "a summary clears what it summarised"


def test_history_keeps_only_the_newest_summaries() -> None:
    reporter = StatsReporter("Server")
    for step in range(HISTORY_LIMIT + 5):
        reporter.add_stat("Environment/Cumulative Reward", float(step))
        reporter.write_stats(step)
    assert len(reporter.history) == HISTORY_LIMIT
    assert [r.step for r in list(reporter.history)[:2]] == [5, 6]
    assert reporter.history[-1].step == HISTORY_LIMIT + 4


def test_console_line_is_ml_agents_format() -> None:
    reporter = StatsReporter("3DBall")
    reporter.add_stat("Environment/Cumulative Reward", 1.0)
    reporter.add_stat("Environment/Cumulative Reward", 2.0)
    line = console_line(reporter.write_stats(50000))
    assert line.startswith("3DBall. Step: 50000. Time Elapsed: ")
    assert line.endswith(" s. Mean Reward: 1.500. Std of Reward: 0.500. Training.")
    empty = console_line(StatsReporter("B").write_stats(10))
    assert empty.endswith("No episode was completed since last summary. Training.")
    lines: list[str] = []
    ConsoleWriter(lines.append).write_stats(StatsReporter("C").write_stats(1))
    assert lines and lines[0].startswith("C. Step: 1.")


def test_tensorboard_events_keep_ml_agents_names(tmp_path: Path) -> None:
    writer = TensorboardWriter(tmp_path)
    reporter = StatsReporter("CartPole", writer.write_stats)
    reporter.add_stat("Environment/Cumulative Reward", 10.0)
    reporter.add_stat("Losses/Policy Loss", 0.5)
    reporter.write_stats(100)
    writer.close()
    (events_file,) = (tmp_path / "CartPole").glob("events.out.tfevents*")
    events = read_scalars(events_file)
    assert (100, "Environment/Cumulative Reward", 10.0) in events
    assert (100, "Losses/Policy Loss", 0.5) in events
