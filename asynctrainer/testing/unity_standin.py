"""A stand-in for a Unity game: the client side of ML-Agents' communicator, running SimpleEnvironment.

:class:`UnityStandIn` connects to a trainer as com.unity.ml-agents' C# communicator does, call
for call: the handshake (call 1: versions and capabilities; call 2: empty, answered with the
first RESET and the side-channel messages), then one call per Academy step with the agents'
infos (``brain_parameters`` the first time a behavior has agents), a 400 status when it closes
by itself (Stop in the Editor), and quitting when the trainer answers with anything but 200.
The game is ML-Agents' SimpleEnvironment (:mod:`asynctrainer.testing.simple_env`): one vector
observation (the goal), optionally a PNG camera of it, laid out as Unity 3.x (``[C, H, W]``) or
2.x (``[H, W, C]``) sends it, and the game's own stats on Unity's stats channel. With ``scene``
it is one of ML-Agents' multi-agent example scenes instead (:mod:`asynctrainer.testing.scenes`:
several behaviors, teams and groups with the scene's specs; grids sent as 3.x sends them).

Run as a program (``python -m asynctrainer.testing.unity_standin --mlagents-port 5005``) it is
a fake player executable: :func:`write_player_executable` wraps it in a file the launcher finds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import grpc.aio
import numpy as np

from asynctrainer.envs.spec import ActionBatch, StepBatch
from asynctrainer.envs.unity.communicator_objects.agent_info_pb2 import AgentInfoProto
from asynctrainer.envs.unity.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto
from asynctrainer.envs.unity.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from asynctrainer.envs.unity.communicator_objects.header_pb2 import HeaderProto
from asynctrainer.envs.unity.communicator_objects.observation_pb2 import NONE, PNG, ObservationProto
from asynctrainer.envs.unity.communicator_objects.unity_message_pb2 import UnityMessageProto, UnityOutputProto
from asynctrainer.envs.unity.communicator_objects.unity_rl_initialization_pb2 import (
    UnityRLInitializationInputProto,
    UnityRLInitializationOutputProto,
)
from asynctrainer.envs.unity.communicator_objects.unity_rl_pb2 import RESET, UnityRLInputProto, UnityRLOutputProto
from asynctrainer.envs.unity.side_channels import (
    ENGINE_CONFIGURATION_ID,
    ENVIRONMENT_PARAMETERS_ID,
    STATS_ID,
    IncomingMessage,
    OutgoingMessage,
)
from asynctrainer.errors import EnvError
from asynctrainer.testing.scenes import SceneEnvironment
from asynctrainer.testing.simple_env import SimpleEnvironment

__all__ = ["StandInRecord", "UnityStandIn", "encode_png", "free_ports", "write_player_executable"]

_METHOD = "/communicator_objects.UnityToExternalProto/Exchange"
_HEADER = np.dtype([("id", "V16"), ("length", "<i4")])

Visual = Literal["none", "chw", "hwc"]


def free_ports(n: int = 1) -> int:
    """A local port with ``n - 1`` free ports after it (a base port for ``n`` players), free when asked."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            base = int(s.getsockname()[1])
        try:
            for i in range(1, n):
                with socket.socket() as s:
                    s.bind(("localhost", base + i))
            return base
        except OSError:
            continue
    raise EnvError(f"Found no run of {n} free local ports after 100 tries: free some ports or pass one.")


def encode_png(image: np.ndarray) -> bytes:
    """``image`` (H, W, C) in [0, 1] as Unity encodes a camera: ⌈C/3⌉ RGB PNG files, concatenated."""
    from PIL import Image

    data = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    out = bytearray()
    for start in range(0, data.shape[2], 3):
        chunk = data[:, :, start : start + 3]
        if chunk.shape[2] < 3:
            chunk = np.concatenate([chunk, np.zeros((*chunk.shape[:2], 3 - chunk.shape[2]), np.uint8)], axis=2)
        buffer = io.BytesIO()
        Image.fromarray(chunk, "RGB").save(buffer, format="PNG")
        out += buffer.getvalue()
    return bytes(out)


def _side_channel_messages(data: bytes) -> list[tuple[bytes, bytes]]:
    """``[(channel id bytes_le, payload)]`` of a side-channel blob."""
    out = []
    offset = 0
    while offset < len(data):
        header = np.frombuffer(data, _HEADER, 1, offset)[0]
        offset += _HEADER.itemsize
        length = int(header["length"])
        out.append((bytes(header["id"]), data[offset : offset + length]))
        offset += length
    return out


@dataclass
class StandInRecord:
    """What the stand-in saw of the trainer, for tests to assert on."""

    init_input: UnityRLInitializationInputProto | None = None
    first_input: UnityRLInputProto | None = None
    engine_messages: list[tuple[int, float | tuple[int, int]]] = field(default_factory=list)
    environment_parameters: dict[str, Any] = field(default_factory=dict)
    commands: list[int] = field(default_factory=list)
    actions: list[dict[str, int]] = field(default_factory=list)
    final_status: int | None = None
    steps: int = 0


class UnityStandIn:
    """A fake Unity game that connects to a trainer on ``port`` (see the module docs).

    :param behavior: the behavior id, ``Name?team=N``.
    :param num_agents: agents of the behavior, all requesting a decision every step.
    :param action_sizes: ``(continuous, discrete branches)`` as SimpleEnvironment takes them.
    :param visual: add a camera observation of the goal, as 3.x (``chw``) or 2.x (``hwc``) lays it out.
    :param group_id: put every agent in this group (0: no group) with a group reward of ±0.5 at each episode end.
    :param masked_actions: SimpleEnvironment's masks, sent as Unity's flat ``action_mask``.
    :param max_steps: send a 400 (Stop in the Editor) after this many steps; None: run until the trainer ends it.
    :param stats: send the game's stats (``Custom/Goal``: average, ``Custom/Episodes``: sum) at episode ends.
    :param scene: play this scene of :data:`~asynctrainer.testing.scenes.SCENES` (its behaviors and
        specs) instead of SimpleEnvironment; ``behavior``, ``num_agents``, ``action_sizes``,
        ``visual``, ``group_id`` and ``masked_actions`` are then the scene's.
    """

    def __init__(
        self,
        port: int,
        *,
        behavior: str = "1D?team=0",
        num_agents: int = 1,
        action_sizes: tuple[int, int] = (0, 1),
        visual: Visual = "none",
        image_size: tuple[int, int] = (20, 20),
        group_id: int = 0,
        masked_actions: dict[int, list[int]] | None = None,
        max_steps: int | None = None,
        stats: bool = True,
        seed: int = 0,
        communication_version: str = "1.5.0",
        package_version: str = "3.0.0",
        host: str = "localhost",
        scene: str | None = None,
    ) -> None:
        self.port = port
        self.sim: SimpleEnvironment | SceneEnvironment = (
            SimpleEnvironment(
                behavior, num_agents=num_agents, action_sizes=action_sizes, seed=seed, masked_actions=masked_actions
            )
            if scene is None
            else SceneEnvironment(scene, seed=seed)
        )
        #: The agents of each behavior that asked for a decision in the last step sent, in order.
        self._asked: dict[str, np.ndarray] = {}
        self._brains_sent: set[str] = set()
        self.visual = visual
        self.image_size = image_size
        self.group_id = group_id
        self.max_steps = max_steps
        self.stats = stats
        self.communication_version = communication_version
        self.package_version = package_version
        self.target = f"{host}:{port}"
        self.record = StandInRecord()

    # ----- the protocol -----------------------------------------------------------------------

    async def run(self, *, connect_timeout: float = 30.0) -> StandInRecord:
        """Connect, play until the trainer ends the session (or ``max_steps``), and return what was seen."""
        async with grpc.aio.insecure_channel(self.target) as channel:
            exchange = channel.unary_unary(
                _METHOD,
                request_serializer=UnityMessageProto.SerializeToString,
                response_deserializer=UnityMessageProto.FromString,
            )
            await asyncio.wait_for(channel.channel_ready(), connect_timeout)
            reply = await exchange(self._handshake())
            if reply.header.status != 200:
                self.record.final_status = reply.header.status
                return self.record
            self.record.init_input = reply.unity_input.rl_initialization_input
            if not reply.unity_input.rl_initialization_input.HasField("capabilities"):
                raise EnvError("The trainer's handshake reply has no capabilities (Unity throws).")
            reply = await exchange(UnityMessageProto(header=HeaderProto(status=200)))
            if reply.header.status != 200 or not reply.unity_input.HasField("rl_input"):
                self.record.final_status = reply.header.status
                return self.record
            self.record.first_input = reply.unity_input.rl_input
            self._apply_side_channel(reply.unity_input.rl_input.side_channel)
            steps = await self.sim.reset()
            while True:
                if self.max_steps is not None and self.record.steps >= self.max_steps:
                    await exchange(UnityMessageProto(header=HeaderProto(status=400)))
                    self.record.final_status = 400
                    return self.record
                reply = await exchange(self._output(steps))
                if reply.header.status != 200:
                    self.record.final_status = reply.header.status
                    return self.record
                rl_input = reply.unity_input.rl_input
                self._apply_side_channel(rl_input.side_channel)
                self.record.commands.append(int(rl_input.command))
                if rl_input.command == RESET:
                    steps = await self.sim.reset()  # Unity reports no terminals for the episodes it cut off
                    continue
                steps = await self.sim.step(self._actions(rl_input))
                self.record.steps += 1

    def _handshake(self) -> UnityMessageProto:
        init = UnityRLInitializationOutputProto(
            name="AcademySingleton",
            communication_version=self.communication_version,
            package_version=self.package_version,
            capabilities=UnityRLCapabilitiesProto(
                baseRLCapabilities=True,
                concatenatedPngObservations=True,
                compressedChannelMapping=True,
                hybridActions=True,
                trainingAnalytics=True,
                variableLengthObservation=True,
                multiAgentGroups=True,
            ),
        )
        return UnityMessageProto(
            header=HeaderProto(status=200), unity_output=UnityOutputProto(rl_initialization_output=init)
        )

    def _scene_observations(self, obs: list[np.ndarray], row: int) -> list[ObservationProto]:
        """A scene agent's observations: vectors as floats, grids channel-first (Unity 3.x) as floats."""
        out = []
        for o in obs:
            values = o[row]
            shape, dims = [values.shape[0]], [1]
            if values.ndim == 3:
                values = values.transpose(2, 0, 1)
                shape, dims = list(values.shape), [1, 2, 2]
            out.append(
                ObservationProto(
                    shape=shape,
                    compression_type=NONE,
                    float_data=ObservationProto.FloatData(data=values.ravel().tolist()),
                    dimension_properties=dims,
                )
            )
        return out

    def _agent_observations(self, obs: list[np.ndarray], row: int) -> list[ObservationProto]:
        if isinstance(self.sim, SceneEnvironment):
            return self._scene_observations(obs, row)
        return self._observations(float(obs[0][row, 0]))

    def _observations(self, goal: float) -> list[ObservationProto]:
        vector = ObservationProto(
            shape=[1],
            compression_type=NONE,
            float_data=ObservationProto.FloatData(data=[goal]),
            dimension_properties=[1],
            name="VectorSensor_size1",
        )
        if self.visual == "none":
            return [vector]
        height, width = self.image_size
        image = np.full((height, width, 3), 1.0 if goal > 0 else 0.0, np.float32)
        image[0, :, 1] = 0.5  # rows differ: a flipped or transposed decode is caught
        shape, dims = ([3, height, width], [1, 2, 2]) if self.visual == "chw" else ([height, width, 3], [2, 2, 1])
        camera = ObservationProto(
            shape=shape,
            compression_type=PNG,
            compressed_data=encode_png(image),
            dimension_properties=dims,
            name="CameraSensor",
        )
        return [camera, vector]  # sensors are sorted by name, as Unity does

    def _group(
        self, group_id: np.ndarray | None, group_reward: np.ndarray | None, i: int, otherwise: float
    ) -> tuple[int, float]:
        """An agent's ``(group_id, group_reward)``: the scene's, else ``group_id`` and ``otherwise``."""
        if group_id is not None and group_reward is not None:
            return int(group_id[i]), float(group_reward[i])
        return self.group_id, otherwise if self.group_id else 0.0

    def _infos(self, batch: StepBatch) -> list[AgentInfoProto]:
        infos = []
        terminal = batch.terminal
        for i, aid in enumerate(terminal.agent_id.tolist()):
            reward = float(terminal.reward[i])
            group, group_reward = self._group(terminal.group_id, terminal.group_reward, i, 0.5 if reward > 0 else -0.5)
            infos.append(
                AgentInfoProto(
                    reward=reward,
                    done=True,
                    max_step_reached=bool(terminal.interrupted[i]),
                    id=int(aid),
                    observations=self._agent_observations(terminal.obs, i),
                    group_id=group,
                    group_reward=group_reward,
                )
            )
        decision = batch.decision
        mask = decision.action_mask
        for i, aid in enumerate(decision.agent_id.tolist()):
            group, _ = self._group(decision.group_id, decision.group_reward, i, 0.0)
            infos.append(
                AgentInfoProto(
                    reward=float(decision.reward[i]),
                    done=False,
                    id=int(aid),
                    action_mask=[] if mask is None else mask[i].tolist(),
                    observations=self._agent_observations(decision.obs, i),
                    group_id=group,
                )
            )
        return infos

    def _output(self, steps: dict[str, StepBatch]) -> UnityMessageProto:
        rl_output = UnityRLOutputProto()
        brains = []
        for name, batch in steps.items():
            infos = self._infos(batch)
            rl_output.agentInfos[name].value.extend(infos)
            self._asked[name] = batch.decision.agent_id
            if self.stats and len(batch.terminal):
                rl_output.side_channel += self._stats_message(batch)
            if name not in self._brains_sent and infos:
                self._brains_sent.add(name)
                spec = self.sim.behavior_specs[name].action_spec
                brains.append(
                    BrainParametersProto(
                        brain_name=name,
                        is_training=True,
                        action_spec=ActionSpecProto(
                            num_continuous_actions=spec.continuous_size,
                            num_discrete_actions=spec.discrete_size,
                            discrete_branch_sizes=list(spec.discrete_branches),
                        ),
                    )
                )
        output = UnityOutputProto(rl_output=rl_output)
        if brains:
            output.rl_initialization_output.CopyFrom(UnityRLInitializationOutputProto(brain_parameters=brains))
        return UnityMessageProto(header=HeaderProto(status=200), unity_output=output)

    def _stats_message(self, batch: StepBatch) -> bytes:
        out = bytearray()
        for key, value, aggregation in (
            ("Custom/Goal", float(np.mean(batch.terminal.obs[0])), 0),
            ("Custom/Episodes", float(len(batch.terminal)), 2),
        ):
            msg = OutgoingMessage()
            msg.write_string(key)
            msg.write_float32(value)
            msg.write_int32(aggregation)
            out += STATS_ID.bytes_le + len(msg.buffer).to_bytes(4, "little", signed=True) + msg.buffer
        return bytes(out)

    def _actions(self, rl_input: UnityRLInputProto) -> dict[str, ActionBatch]:
        out, counts = {}, {}
        for name, asked in self._asked.items():
            n, spec = len(asked), self.sim.behavior_specs[name].action_spec
            listed = rl_input.agent_actions[name].value if name in rl_input.agent_actions else []
            counts[name] = len(listed)
            continuous = np.zeros((n, spec.continuous_size), np.float32)
            discrete = np.zeros((n, spec.discrete_size), np.int32)
            for i, action in enumerate(listed[:n]):  # agents without an action act with zeros, as in Unity
                if spec.continuous_size:
                    continuous[i] = np.asarray(action.continuous_actions, np.float32)[: spec.continuous_size]
                if spec.discrete_size:
                    discrete[i] = np.asarray(action.discrete_actions, np.int32)[: spec.discrete_size]
            out[name] = ActionBatch(continuous, discrete, asked.copy())
        self.record.actions.append(counts)
        return out

    def _apply_side_channel(self, data: bytes) -> None:
        for raw_id, payload in _side_channel_messages(data):
            msg = IncomingMessage(payload)
            if raw_id == ENGINE_CONFIGURATION_ID.bytes_le:
                kind = msg.read_int32()
                if kind == 0:
                    self.record.engine_messages.append((0, (msg.read_int32(), msg.read_int32())))
                elif kind == 2:
                    self.record.engine_messages.append((2, msg.read_float32()))
                else:
                    self.record.engine_messages.append((kind, msg.read_int32()))
            elif raw_id == ENVIRONMENT_PARAMETERS_ID.bytes_le:
                key = msg.read_string()
                kind = msg.read_int32()
                if kind == 0:
                    self.record.environment_parameters[key] = msg.read_float32()
                else:
                    seed, sampler = msg.read_int32(), msg.read_int32()
                    values = msg.read_float32_list() if sampler == 2 else [msg.read_float32(), msg.read_float32()]
                    self.record.environment_parameters[key] = (sampler, seed, values)


# ----- a fake player executable -------------------------------------------------------------------


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="unity-standin")
    p.add_argument("--mlagents-port", type=int, default=None)
    p.add_argument("-logFile", dest="log_file", default=None)
    p.add_argument("--num-agents", type=int, default=1)
    p.add_argument("--action-sizes", default="0,1")
    p.add_argument("--record-args", default=None, help="append this process's arguments to this file (JSON lines)")
    p.add_argument("--crash-after", type=int, default=None, help="exit with status 3 after this many steps")
    p.add_argument("--crash-once-marker", default=None, help="crash only if this file does not exist yet")
    p.add_argument("--max-steps", type=int, default=None)
    args, _ = p.parse_known_args(list(argv))
    return args


async def _player_main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    if args.record_args:
        with open(args.record_args, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": list(argv), "pid": os.getpid()}) + "\n")
    if args.log_file:
        Path(args.log_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.log_file).write_text(f"stand-in player on port {args.mlagents_port}\n", encoding="utf-8")
    if args.mlagents_port is None:
        return 0  # Unity without --mlagents-port never connects (it runs inference)
    continuous, discrete = (int(v) for v in args.action_sizes.split(","))
    crash = args.crash_after
    if crash is not None and args.crash_once_marker:
        try:  # created atomically: of players started together, exactly one crashes
            os.close(os.open(args.crash_once_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            crash = None
    standin = UnityStandIn(
        args.mlagents_port,
        num_agents=args.num_agents,
        action_sizes=(continuous, discrete),
        max_steps=args.max_steps,
        seed=args.mlagents_port,
    )
    if crash is None:
        await standin.run()
        return 0
    task = asyncio.create_task(standin.run())
    while not task.done() and standin.record.steps < crash:
        await asyncio.sleep(0.01)
    if not task.done():
        os._exit(3)  # a crash: no goodbye to the trainer
    await task
    return 0


def write_player_executable(path: str | os.PathLike[str], *, python: str = sys.executable, **options: Any) -> Path:
    """Write a fake Unity player at ``path`` (a Linux build: ``path.x86_64``) running the stand-in.

    ``options`` become its arguments (``num_agents=4`` → ``--num-agents 4``), before those the
    launcher adds. Returns the executable's path; pass ``path`` to ``--env``.
    """
    executable = Path(os.fspath(path) + ".x86_64")
    extra = []
    for key, value in options.items():
        extra += [f"--{key.replace('_', '-')}", str(value)]
    quoted = " ".join(f"'{a}'" for a in extra)
    executable.write_text(
        f'#!/bin/sh\nexec "{python}" -m asynctrainer.testing.unity_standin {quoted} "$@"\n', encoding="utf-8"
    )
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return executable


if __name__ == "__main__":
    sys.exit(asyncio.run(_player_main(sys.argv[1:])))
