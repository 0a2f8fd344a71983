"""Unity side channels: typed messages that ride on every exchange, in both directions.

The ``side_channel`` bytes of a message repeat ``[16-byte channel GUID (.NET byte order, i.e.
``uuid.bytes_le``)][int32 little-endian length][payload]``. Payloads are built from int32 and
float32 (little-endian), 1-byte bools, strings (int32 byte count + ASCII) and float lists
(int32 count + floats); reading past the end of a payload returns the default, as Unity does.

Users' own channels subclass :class:`SideChannel` with the GUID their C# channel uses, and are
passed to :class:`~asynctrainer.envs.unity.UnityEnv` (``side_channels=[...]``).
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from asynctrainer.errors import EnvError, SettingsError

__all__ = [
    "ENGINE_CONFIGURATION_ID",
    "ENVIRONMENT_PARAMETERS_ID",
    "STATS_ID",
    "EngineConfig",
    "EngineConfigurationChannel",
    "EnvironmentParametersChannel",
    "IncomingMessage",
    "OutgoingMessage",
    "SideChannel",
    "SideChannelManager",
    "StatsAggregation",
    "StatsSideChannel",
]

logger = logging.getLogger("asynctrainer")

ENGINE_CONFIGURATION_ID = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
ENVIRONMENT_PARAMETERS_ID = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
STATS_ID = uuid.UUID("a1d8f7b7-cec8-50f9-b78b-d3e165a78520")

_I32 = struct.Struct("<i")
_F32 = struct.Struct("<f")


class OutgoingMessage:
    """A payload being written for Unity."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write_bool(self, value: bool) -> None:
        self.buffer += b"\x01" if value else b"\x00"

    def write_int32(self, value: int) -> None:
        self.buffer += _I32.pack(value)

    def write_float32(self, value: float) -> None:
        self.buffer += _F32.pack(value)

    def write_float32_list(self, values: Sequence[float]) -> None:
        self.write_int32(len(values))
        for v in values:
            self.write_float32(v)

    def write_string(self, value: str) -> None:
        encoded = value.encode("ascii")
        self.write_int32(len(encoded))
        self.buffer += encoded

    def set_raw_bytes(self, data: bytes) -> None:
        self.buffer = bytearray(data)


class IncomingMessage:
    """A payload received from Unity; reads past its end return the given default."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.offset = 0

    def _take(self, n: int) -> bytes | None:
        if self.offset + n > len(self.data):
            self.offset = len(self.data)
            return None
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def read_bool(self, default: bool = False) -> bool:
        chunk = self._take(1)
        return default if chunk is None else chunk != b"\x00"

    def read_int32(self, default: int = 0) -> int:
        chunk = self._take(4)
        return default if chunk is None else int(_I32.unpack(chunk)[0])

    def read_float32(self, default: float = 0.0) -> float:
        chunk = self._take(4)
        return default if chunk is None else float(_F32.unpack(chunk)[0])

    def read_float32_list(self, default: list[float] | None = None) -> list[float]:
        count = self.read_int32(-1)
        if count < 0 or self.offset + 4 * count > len(self.data):
            self.offset = len(self.data)
            return [] if default is None else default
        return [self.read_float32() for _ in range(count)]

    def read_string(self, default: str = "") -> str:
        count = self.read_int32(-1)
        chunk = self._take(count) if count >= 0 else None
        return default if chunk is None else chunk.decode("ascii", errors="replace")

    def get_raw_bytes(self) -> bytes:
        return self.data


class SideChannel:
    """One channel, identified by the GUID its C# counterpart uses.

    Override :meth:`on_message_received` to read Unity's messages; call
    :meth:`queue_message_to_send` to send one with the next exchange.
    """

    def __init__(self, channel_id: uuid.UUID) -> None:
        self.channel_id = channel_id
        self._queued: list[bytes] = []

    def on_message_received(self, msg: IncomingMessage) -> None:
        """Called on the event loop with each message Unity sent on this channel."""

    def queue_message_to_send(self, msg: OutgoingMessage) -> None:
        self._queued.append(bytes(msg.buffer))

    def take_queued(self) -> list[bytes]:
        """The messages waiting to go, oldest first; the queue is emptied."""
        queued, self._queued = self._queued, []
        return queued


@dataclass(frozen=True)
class EngineConfig:
    """Unity's engine settings; the defaults are ``mlagents-learn``'s (time scale 20 while training)."""

    width: int = 84
    height: int = 84
    quality_level: int = 5
    time_scale: float = 20.0
    target_frame_rate: int = -1
    capture_frame_rate: int = 60


class EngineConfigurationChannel(SideChannel):
    """Screen size, quality, time scale and frame rates, sent before the first reset."""

    def __init__(self) -> None:
        super().__init__(ENGINE_CONFIGURATION_ID)

    def set_configuration(self, config: EngineConfig) -> None:
        resolution = OutgoingMessage()
        resolution.write_int32(0)
        resolution.write_int32(config.width)
        resolution.write_int32(config.height)
        self.queue_message_to_send(resolution)
        for kind, value in (
            (1, config.quality_level),
            (2, config.time_scale),
            (3, config.target_frame_rate),
            (4, config.capture_frame_rate),
        ):
            msg = OutgoingMessage()
            msg.write_int32(kind)
            if kind == 2:  # the time scale is the one float
                msg.write_float32(float(value))
            else:
                msg.write_int32(int(value))
            self.queue_message_to_send(msg)

    def on_message_received(self, msg: IncomingMessage) -> None:
        raise EnvError("Unity sent a message on the engine configuration channel, which only goes to Unity.")


class EnvironmentParametersChannel(SideChannel):
    """Values the game reads with ``Academy.Instance.EnvironmentParameters.GetWithDefault``."""

    def __init__(self) -> None:
        super().__init__(ENVIRONMENT_PARAMETERS_ID)

    def _start(self, key: str, kind: int) -> OutgoingMessage:
        msg = OutgoingMessage()
        msg.write_string(key)
        msg.write_int32(kind)
        return msg

    def set_float_parameter(self, key: str, value: float) -> None:
        msg = self._start(key, 0)
        msg.write_float32(value)
        self.queue_message_to_send(msg)

    def _sampler(self, key: str, seed: int, sampler: int) -> OutgoingMessage:
        msg = self._start(key, 1)
        msg.write_int32(seed)
        msg.write_int32(sampler)
        return msg

    def set_uniform_sampler_parameters(self, key: str, min_value: float, max_value: float, seed: int) -> None:
        msg = self._sampler(key, seed, 0)
        msg.write_float32(min_value)
        msg.write_float32(max_value)
        self.queue_message_to_send(msg)

    def set_gaussian_sampler_parameters(self, key: str, mean: float, st_dev: float, seed: int) -> None:
        msg = self._sampler(key, seed, 1)
        msg.write_float32(mean)
        msg.write_float32(st_dev)
        self.queue_message_to_send(msg)

    def set_multirangeuniform_sampler_parameters(
        self, key: str, intervals: Sequence[tuple[float, float]], seed: int
    ) -> None:
        msg = self._sampler(key, seed, 2)
        msg.write_float32_list([bound for interval in intervals for bound in interval])
        self.queue_message_to_send(msg)

    def set_parameters(self, parameters: Mapping[str, Any], run_seed: int) -> None:
        """Queue the YAML ``environment_parameters``: constants as floats, samplers with their seeds.

        A sampler's seed is its ``seed``, or ``run_seed`` plus its position among the samplers
        when that is absent or -1 (ML-Agents' rule), so two samplers never draw alike.
        """
        offset = 0
        for key, value in parameters.items():
            if not isinstance(value, Mapping):
                self.set_float_parameter(key, float(value))
                continue
            kind = value["sampler_type"]
            args = dict(value["sampler_parameters"])
            seed = int(args.pop("seed", -1))
            if seed == -1:
                seed = run_seed + offset
                offset += 1
            if kind == "constant":
                self.set_float_parameter(key, float(args["value"]))
            elif kind == "uniform":
                self.set_uniform_sampler_parameters(key, float(args["min_value"]), float(args["max_value"]), seed)
            elif kind == "gaussian":
                self.set_gaussian_sampler_parameters(key, float(args["mean"]), float(args["st_dev"]), seed)
            else:
                intervals = [(float(lo), float(hi)) for lo, hi in args["intervals"]]
                self.set_multirangeuniform_sampler_parameters(key, intervals, seed)

    def on_message_received(self, msg: IncomingMessage) -> None:
        raise EnvError("Unity sent a message on the environment parameters channel, which only goes to Unity.")


StatsAggregation = Literal["average", "most_recent", "sum", "histogram"]
_AGGREGATIONS: tuple[StatsAggregation, ...] = ("average", "most_recent", "sum", "histogram")


class StatsSideChannel(SideChannel):
    """The game's ``Academy.Instance.StatsRecorder.Add(key, value, aggregation)`` values."""

    def __init__(self) -> None:
        super().__init__(STATS_ID)
        self._received: list[tuple[str, float, StatsAggregation]] = []

    def on_message_received(self, msg: IncomingMessage) -> None:
        key = msg.read_string()
        value = msg.read_float32()
        method = msg.read_int32()
        aggregation = _AGGREGATIONS[method] if 0 <= method < len(_AGGREGATIONS) else "average"
        self._received.append((key, value, aggregation))

    def take_stats(self) -> list[tuple[str, float, StatsAggregation]]:
        """Everything received since the last call, in order."""
        received, self._received = self._received, []
        return received


_HEADER = struct.Struct("<16si")


class SideChannelManager:
    """Packs the queued messages of its channels for Unity and routes Unity's to theirs."""

    def __init__(self, channels: Iterable[SideChannel]) -> None:
        self.channels: dict[uuid.UUID, SideChannel] = {}
        for channel in channels:
            if channel.channel_id in self.channels:
                raise SettingsError(
                    f"Two side channels use the id {channel.channel_id}: each channel needs its own id."
                )
            self.channels[channel.channel_id] = channel
        self._unknown_warned: set[uuid.UUID] = set()

    def encode_outgoing(self) -> bytes:
        """Every queued message of every channel, in registration order."""
        out = bytearray()
        for channel in self.channels.values():
            for payload in channel.take_queued():
                out += _HEADER.pack(channel.channel_id.bytes_le, len(payload))
                out += payload
        return bytes(out)

    def process_incoming(self, data: bytes) -> None:
        """Hand each message in ``data`` to its channel; unknown ids are warned about once and dropped."""
        offset = 0
        while offset < len(data):
            if offset + _HEADER.size > len(data):
                raise EnvError(
                    f"Unity sent a side-channel message cut short: {len(data) - offset} bytes left where a "
                    f"{_HEADER.size}-byte header (channel id and length) was expected."
                )
            raw_id, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            if length < 0 or offset + length > len(data):
                raise EnvError(
                    f"Unity sent a side-channel message of {length} bytes with only {len(data) - offset} left."
                )
            channel_id = uuid.UUID(bytes_le=raw_id)
            payload = data[offset : offset + length]
            offset += length
            channel = self.channels.get(channel_id)
            if channel is None:
                if channel_id not in self._unknown_warned:
                    self._unknown_warned.add(channel_id)
                    logger.warning("Unknown side channel data received. Channel type: %s.", channel_id)
                continue
            channel.on_message_received(IncomingMessage(payload))
