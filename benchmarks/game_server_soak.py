"""Soak test of examples/game_server.py: memory over a run, and tick jitter with and without idle connections.

The server ticks at ``--tick-hz`` for ``--clients`` scripted clients (joining, playing, leaving)
while a Runner trains on the same loop: a fake trainer by default (the server's own costs,
no TensorFlow; its update sleeps ``--update-ms`` in a worker thread), or PPO with ``--ppo``.
The clients run in a child process, so the resident memory measured is the server's and the
trainer's alone. After ``--warmup`` seconds the run has two phases of ``--seconds`` each:

1. ``no idle``: the clients only;
2. ``N idle``: plus ``--idle`` connections that send half a line and nothing more (half-open
   clients); the server closes each after its idle timeout (``--idle-timeout``) and the
   script opens it again at once, so ``--idle`` stay open.

Per phase it prints the tick jitter ``|period - 1/tick_hz|`` (p50/p99/max, ms, from the
start of each tick to the next), the process's resident memory at the phase's start and end,
and what the server holds (stored tick periods, connections). ``--out`` gets the same as JSON
(default ``benchmarks/results/game_server_soak.json``; ``results/`` is ignored by git).
``--tracemalloc FRAMES`` also lists the Python allocation sites that grew over each phase
(it slows the run: its jitter is not the server's).

    python benchmarks/game_server_soak.py --seconds 60 --idle 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from array import array
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from asynctrainer.runtime.stats import HISTORY_LIMIT
from asynctrainer.testing.fakes import FakeTrainer, fake_trainer_factory
from asynctrainer.testing.game_clients import run_swarm

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "game_server_soak.json"


def load_game_server() -> ModuleType:
    spec = importlib.util.spec_from_file_location("game_server_example", ROOT / "examples" / "game_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux: /proc/self/statm; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def jitter_ms(starts: Sequence[float], tick_hz: float) -> dict[str, float]:
    periods = np.diff(np.asarray(starts))
    if periods.size == 0:
        return {}
    dev = np.abs(periods - 1.0 / tick_hz) * 1000.0
    return {
        "ticks": int(periods.size),
        "p50": float(np.percentile(dev, 50)),
        "p99": float(np.percentile(dev, 99)),
        "max": float(dev.max()),
    }


def trimmed_rss_mb() -> float | None:
    """Resident memory after glibc's ``malloc_trim(0)`` hands freed heap pages back (None
    elsewhere): what RSS grew by beyond it was memory freed, not memory held."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.malloc_trim(0)
    return rss_mb()


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (time s, MiB) samples, in MiB per minute (0 with fewer than 2)."""
    if len(samples) < 2:
        return 0.0
    t, m = np.asarray(samples).T
    return float(np.polyfit(t - t[0], m, 1)[0] * 60.0)


def python_growth(before: tracemalloc.Snapshot, frames: int) -> list[dict[str, Any]]:
    """The ten allocation sites whose live Python memory grew most since ``before``."""
    after = tracemalloc.take_snapshot()
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
    ]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback")
    return [
        {"kib": s.size_diff / 1024, "blocks": s.count_diff, "where": [str(f) for f in s.traceback][-frames:]}
        for s in stats[:10]
    ]


class IdleConnections:
    """``n`` half-open connections, each reopened as soon as the server closes it."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.n = port, n
        self.reopened = 0
        self.refused = 0
        self.open = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.1)
                continue
            self.open += 1
            try:
                writer.write(b'{"type":')  # never finished
                while await reader.read(4096):  # the server's error reply, then EOF
                    pass
            except OSError:
                pass
            finally:
                self.open -= 1
                writer.close()
            self.reopened += 1

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._one()) for _ in range(self.n)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    gs = load_game_server()
    options: dict[str, Any] = {}
    if not args.ppo:

        def forget(trainer: FakeTrainer) -> None:  # a fake trainer keeps what it got: drop it
            trainer.received.clear()
            trainer.updated_batches.clear()

        options["trainer_factory"] = fake_trainer_factory(update_seconds=args.update_ms / 1000.0, on_update=forget)
    server = gs.GameServer(
        gs.default_settings(max_steps=10**9, summary_freq=args.summary_freq),
        tick_hz=args.tick_hz,
        log_every=0,
        idle_timeout=args.idle_timeout,
        **options,
    )
    port = await server.start(0)
    phase = "warmup"
    # Tick start times: array('d') holds 8 bytes a tick (a list of floats 32), so the
    # benchmark's own bookkeeping barely shows in the memory it measures.
    starts: dict[str, array[float]] = {name: array("d") for name in ("warmup", "no idle", "idle")}
    original_tick = server.tick

    async def timed_tick() -> None:
        starts[phase].append(time.perf_counter())
        await original_tick()

    server.tick = timed_tick
    total = args.warmup + 2 * args.seconds
    # The clients run in a process of their own, so this process's memory is the server's.
    clients = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--clients-of", str(port), "--clients", str(args.clients),
        "--idle", str(args.idle), "--idle-after", str(args.warmup + args.seconds), "--seconds", str(total + 1),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    run = asyncio.create_task(server.run(duration=total + 2))
    rows: dict[str, dict[str, Any]] = {}
    try:
        await asyncio.sleep(args.warmup)
        for name in ("no idle", "idle"):
            phase = name
            before = rss_mb()
            snapshot = tracemalloc.take_snapshot() if args.tracemalloc else None
            samples: list[tuple[float, float]] = []
            phase_end = time.perf_counter() + args.seconds
            while (left := phase_end - time.perf_counter()) > 0:
                await asyncio.sleep(min(1.0, left))
                samples.append((time.perf_counter(), rss_mb()))
            rows[name] = {
                "rss_start_mb": before,
                "rss_end_mb": samples[-1][1],
                "rss_slope_second_half_mb_per_min": slope_per_min(samples[len(samples) // 2 :]),
                "connections_at_end": len(server.connections),
                "stored_periods": int(sum(p.values().size for p in server.periods.values())),
                "summaries_kept": summaries_kept(server),
            }
            rows[name]["rss_trimmed_mb"] = trimmed_rss_mb()  # after the end's sample: the slope is untouched
            if snapshot is not None:
                rows[name]["python_growth"] = python_growth(snapshot, args.tracemalloc)
        phase = "warmup"  # ticks after the phases are not measured
    finally:
        report = await run
        try:
            out, _ = await asyncio.wait_for(clients.communicate(), 30)
        except TimeoutError:
            clients.kill()
            out, _ = await clients.communicate()
        await server.close()
    if clients.returncode:
        print(f"the client process exited with {clients.returncode}: its report is missing", file=sys.stderr)
    client_report = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    for name, row in rows.items():
        row["growth_mb"] = row["rss_end_mb"] - row["rss_start_mb"]
        row["jitter_ms"] = jitter_ms(starts[name], args.tick_hz)
    return {
        "args": vars(args),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "phases": {("no idle" if k == "no idle" else f"{args.idle} idle"): v for k, v in rows.items()},
        "server": {
            "ticks": report.ticks,
            "joins": report.joins,
            "idle_timeouts": report.idle_timeouts,
            "refused_connections": report.refused_connections,
            "accept_errors": report.accept_errors,
            "trained_steps": report.trained_steps,
            "ticks_timed": server._ticks_timed,
        },
        "clients": client_report,
    }


async def clients_of(args: argparse.Namespace) -> None:
    """The client process: ``--clients`` playing for ``--seconds``, ``--idle`` half-open
    connections from ``--idle-after`` on; prints what they saw as one JSON line."""
    port = args.clients_of
    swarm = asyncio.create_task(run_swarm("127.0.0.1", port, args.clients, duration=args.seconds, churn=0.1, seed=1))
    idle = IdleConnections(port, args.idle)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(swarm), args.idle_after)
    idle.start()
    report = await swarm
    await idle.stop()
    print(json.dumps({"joins": report.joins, "idle_reopened": idle.reopened, "idle_refused": idle.refused}))


def summaries_kept(server: Any) -> int:
    """The stats summaries the trainer's reporter holds (bounded: ``HISTORY_LIMIT``)."""
    trainers = server.runner.trainers if server.runner is not None else {}
    return sum(len(t.stats_reporter.history) for t in trainers.values())


def fmt_mb(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def print_table(result: dict[str, Any]) -> None:
    a = result["args"]
    print(
        f"game server soak: {a['tick_hz']:g} Hz, {a['clients']} clients, {a['seconds']:g} s per phase, "
        f"idle timeout {a['idle_timeout']} s, {'PPO' if a['ppo'] else 'fake trainer'}"
    )
    header = (
        f"{'phase':<10}{'ticks':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'RSS MiB':>10}{'growth':>9}"
        f"{'MiB/min*':>10}{'trimmed':>9}{'conns':>7}{'stats':>7}"
    )
    print(header)
    for name, row in result["phases"].items():
        j = row["jitter_ms"]
        print(
            f"{name:<10}{j.get('ticks', 0):>7}{j.get('p50', float('nan')):>9.3f}{j.get('p99', float('nan')):>9.3f}"
            f"{j.get('max', float('nan')):>9.3f}{row['rss_end_mb']:>10.1f}{row['growth_mb']:>+9.2f}"
            f"{row['rss_slope_second_half_mb_per_min']:>+10.2f}{fmt_mb(row['rss_trimmed_mb']):>9}"
            f"{row['connections_at_end']:>7}"
            f"{row['summaries_kept']:>7}"
        )
    s = result["server"]
    print(
        f"server: {s['ticks']} ticks, {s['joins']} joins, {s['idle_timeouts']} idle timeouts, "
        f"{s['refused_connections']} refused, {s['accept_errors']} accept errors; stored tick periods "
        f"{max(r['stored_periods'] for r in result['phases'].values())} (bounded)"
    )
    for name, row in result["phases"].items():
        for site in row.get("python_growth", []):
            print(
                f"{name:<10}{site['kib']:>+10.1f} KiB {site['blocks']:>+7} blocks  "
                + " <- ".join(reversed(site["where"]))
            )
    print(
        "jitter: |tick period - target| in ms; growth: RSS over the phase; *RSS slope over its second half; "
        "trimmed: RSS at the phase's end after malloc_trim(0) returned freed heap pages; "
        f"stats: summaries the trainer keeps (at most {HISTORY_LIMIT})"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=200, help="idle (half-open) connections in phase 2")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="the server's idle timeout, s")
    parser.add_argument("--clients", type=int, default=20, help="playing clients")
    parser.add_argument("--tick-hz", type=float, default=50.0)
    parser.add_argument("--update-ms", type=float, default=20.0, help="the fake trainer's update time")
    parser.add_argument(
        "--summary-freq",
        type=int,
        default=2000,
        help="steps between stats summaries (the example's 2000: one every 2 s with 20 clients at 50 Hz, so "
        "the bounded history fills in about 33 min; a smaller value fills it within the warm-up)",
    )
    parser.add_argument("--ppo", action="store_true", help="train PPO (TensorFlow) instead of a fake trainer")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace Python allocations (FRAMES deep) and print the sites that grew over each phase",
    )
    parser.add_argument("--clients-of", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--idle-after", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.clients_of is not None:
        asyncio.run(clients_of(args))
        return {}
    if args.tick_hz <= 0:
        parser.error("--tick-hz must be > 0 (jitter is measured against the tick period)")
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    result = asyncio.run(soak(args))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
