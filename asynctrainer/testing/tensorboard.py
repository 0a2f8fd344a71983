"""Reading back the scalars of a TensorBoard event file, to assert on what a run wrote."""

from __future__ import annotations

import struct
from pathlib import Path


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in one event file (TFRecord: length, crc, event, crc)."""
    from tensorboardX.proto import event_pb2

    out: list[tuple[int, str, float]] = []
    data = Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        out.extend((int(event.step), value.tag, float(value.simple_value)) for value in event.summary.value)
    return out
