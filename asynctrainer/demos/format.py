"""The byte layout of Unity's ``.demo`` files.

A file is a sequence of protobuf messages, each preceded by its length as a varint:

- at offset 0, a ``DemonstrationMetaProto`` (API version, name, step and episode counts, mean
  reward), padded with zero bytes up to offset :data:`BRAIN_OFFSET`, so the recorder can rewrite
  it in place when it closes;
- at offset 33, a ``BrainParametersProto`` (``Name?team=N``, the action spec);
- one ``AgentInfoActionPairProto`` per decision or terminal of the recorded agents;
- from com.unity.ml-agents 2.x on, a raw (not length-prefixed) copy of the final meta.

A reader therefore stops after the meta's ``number_steps`` records and takes what follows as the
trailing meta.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from asynctrainer.envs.unity.communicator_objects.brain_parameters_pb2 import BrainParametersProto
from asynctrainer.envs.unity.communicator_objects.demonstration_pb2 import (
    AgentInfoActionPairProto,
    DemonstrationMetaProto,
)
from asynctrainer.errors import DemonstrationError

__all__ = [
    "API_VERSIONS",
    "BRAIN_OFFSET",
    "DemoFile",
    "delimited",
    "read_demo_file",
]

#: Where the brain parameters start; the delimited meta and its zero padding fill the bytes before.
BRAIN_OFFSET = 33
#: The meta versions a reader accepts (Unity writes 1; ML-Agents' loader also reads 0).
API_VERSIONS = (0, 1)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def delimited(data: bytes) -> bytes:
    """``data`` preceded by its length as a varint, as Unity's ``WriteDelimitedTo`` writes it."""
    return _varint(len(data)) + data


@dataclass(frozen=True)
class DemoFile:
    """The messages of one ``.demo`` file, as stored."""

    path: Path
    meta: DemonstrationMetaProto
    brain: BrainParametersProto
    records: list[AgentInfoActionPairProto]
    #: Bytes after the last record: com.unity.ml-agents 2.x and later write a copy of the meta there.
    trailing: bytes


_M = TypeVar("_M", DemonstrationMetaProto, BrainParametersProto, AgentInfoActionPairProto)


class _Cursor:
    def __init__(self, path: Path, data: bytes, offset: int) -> None:
        self.path, self.data, self.offset = path, data, offset

    def error(self, what: str) -> DemonstrationError:
        return DemonstrationError(
            f"Can't load demonstration {self.path}: {what} at byte {self.offset} is cut short or corrupt "
            "(is it a .demo file written by Unity or asynctrainer?).",
            path=str(self.path),
        )

    def varint(self, what: str) -> int:
        value, shift = 0, 0
        while True:
            if self.offset >= len(self.data) or shift > 63:
                raise self.error(what)
            byte = self.data[self.offset]
            self.offset += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def message(self, message: _M, what: str) -> _M:
        start = self.offset
        size = self.varint(what)
        end = self.offset + size
        if end > len(self.data):
            self.offset = start
            raise self.error(what)
        try:
            message.ParseFromString(self.data[self.offset : end])
        except Exception:  # protobuf's DecodeError (its type differs between the C and Python parsers)
            self.offset = start
            raise self.error(what) from None
        self.offset = end
        return message


def read_demo_file(path: Path) -> DemoFile:
    """Read one ``.demo`` file's meta, brain parameters and its ``number_steps`` records."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DemonstrationError(f"Can't load demonstration {path}: {err.strerror or err}.", path=str(path)) from None
    cursor = _Cursor(path, data, 0)
    meta = cursor.message(DemonstrationMetaProto(), "the meta")
    if meta.api_version not in API_VERSIONS:
        raise DemonstrationError(
            f"Can't load demonstration {path}: its API version is {meta.api_version}, and versions "
            f"{' and '.join(map(str, API_VERSIONS))} are supported.",
            path=str(path),
        )
    if meta.number_steps < 0 or cursor.offset > BRAIN_OFFSET:
        raise cursor.error("the meta")
    cursor.offset = BRAIN_OFFSET
    brain = cursor.message(BrainParametersProto(), "the brain parameters")
    records = [cursor.message(AgentInfoActionPairProto(), f"record {i}") for i in range(meta.number_steps)]
    return DemoFile(path, meta, brain, records, data[cursor.offset :])
