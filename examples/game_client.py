"""Game clients for examples/game_server.py: connect, play, leave, rejoin (standard library only).

Each client joins, then reads one ``state`` message per tick (its agent's position, goal,
the action the policy chose, the reward) and answers with an ``ack``. Now and then it asks
for a goal cell of its own for the next episode. After a random number of ticks it either
sends ``leave`` and joins again on the same connection, or disconnects and reconnects: the
server must cope with agents coming and going at any moment. The protocol is described in
examples/game_server.py.

    python examples/game_client.py --port 7777 --clients 50 --duration 60

Prints, per second, how many states the clients received and their mean episode return.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field


@dataclass
class Totals:
    joins: int = 0
    leaves: int = 0
    reconnects: int = 0
    states: int = 0
    returns: list[float] = field(default_factory=list)
    #: the server's ``error`` messages (a refused line, "server full", an idle timeout)
    server_errors: list[str] = field(default_factory=list)


async def client(host: str, port: int, deadline: float, totals: Totals, rng: random.Random) -> None:
    reader, writer = await asyncio.open_connection(host, port)

    def send(message: dict[str, object]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")

    try:
        while time.monotonic() < deadline:
            send({"type": "join"})
            totals.joins += 1
            stay = rng.randint(20, 400)  # ticks before this client leaves
            seen = 0
            while seen < stay:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    line = await asyncio.wait_for(reader.readline(), left)
                except TimeoutError:
                    return
                if not line:
                    return  # the server went away
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not from this protocol's server
                if not isinstance(message, dict) or message.get("type") != "state":
                    if isinstance(message, dict) and message.get("type") == "error":
                        totals.server_errors.append(str(message.get("message")))
                    continue
                seen += 1
                totals.states += 1
                if isinstance(message.get("return"), int | float):
                    totals.returns.append(float(message["return"]))
                if isinstance(message.get("tick"), int):
                    send({"type": "ack", "tick": message["tick"]})
                if rng.random() < 0.02:
                    send({"type": "goal", "cell": rng.randrange(11)})
            await writer.drain()
            if rng.random() < 0.5:
                send({"type": "leave"})
                totals.leaves += 1
            else:
                writer.close()
                totals.reconnects += 1
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def report(totals: Totals, deadline: float) -> None:
    last = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        recent = totals.returns[-200:]
        mean = sum(recent) / len(recent) if recent else float("nan")
        print(
            f"[clients] states/s {totals.states - last}  joins {totals.joins}  mean return (last 200) {mean:.3f}",
            flush=True,
        )
        last = totals.states


async def main(argv: list[str] | None = None) -> Totals:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.duration
    totals = Totals()
    rngs = [random.Random(args.seed * 100_003 + i) for i in range(args.clients)]
    tasks = [client(args.host, args.port, deadline, totals, rng) for rng in rngs]
    if not args.quiet:
        tasks.append(report(totals, deadline))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    print(
        f"[clients] done: joins {totals.joins}, leaves {totals.leaves}, reconnects {totals.reconnects}, "
        f"states {totals.states}, episodes {len(totals.returns)}, errors {len(errors)}, "
        f"server error messages {len(totals.server_errors)}"
    )
    if totals.server_errors:
        print(f"[clients] first server error: {totals.server_errors[0]}")
    return totals


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
