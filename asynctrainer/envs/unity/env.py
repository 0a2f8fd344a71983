"""``UnityEnv``: a Unity game (Editor or built player) as an :class:`~asynctrainer.envs.AsyncEnv`.

The trainer is the gRPC server, Unity the client: each ``Exchange`` call Unity makes is a
coroutine on the event loop (grpc.aio) that hands Unity's message to the env and awaits the
reply the env loop's actions make. One call is open at a time; nothing runs in threads.

The exchange, from Unity's side: call 1 offers the handshake (versions, capabilities); call 2
takes the first reply with a RESET and the queued side-channel messages; every later call
carries the agents of one Academy step and takes their actions. A 400 status from Unity means
it is closing (Stop in the Editor, or a player quitting); a 400 from us tells it to quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, DecisionSteps, EnvStat, StepBatch, TerminalSteps
from asynctrainer.envs.unity.communicator_objects import COMMUNICATION_API_VERSION
from asynctrainer.envs.unity.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from asynctrainer.envs.unity.communicator_objects.header_pb2 import HeaderProto
from asynctrainer.envs.unity.communicator_objects.unity_message_pb2 import UnityInputProto, UnityMessageProto
from asynctrainer.envs.unity.communicator_objects.unity_rl_initialization_pb2 import UnityRLInitializationInputProto
from asynctrainer.envs.unity.communicator_objects.unity_rl_pb2 import (
    RESET,
    STEP,
    UnityRLInputProto,
    UnityRLOutputProto,
)
from asynctrainer.envs.unity.conversion import add_actions_to_proto, behavior_spec_from_proto, steps_from_proto
from asynctrainer.envs.unity.launcher import PlayerLauncher, RestartPolicy
from asynctrainer.envs.unity.side_channels import (
    EngineConfig,
    EngineConfigurationChannel,
    EnvironmentParametersChannel,
    SideChannel,
    SideChannelManager,
    StatsSideChannel,
)
from asynctrainer.errors import EnvError, EnvStoppedError

__all__ = ["EDITOR_PORT", "UnityEnv", "UnityTimeoutError", "versions_compatible"]

logger = logging.getLogger("asynctrainer")

EDITOR_PORT = 5004
#: The trainer package version Unity is told; Unity only logs it (this is mlagents-envs 1.1.0's, which it expects).
TRAINER_PACKAGE_VERSION = "1.1.0"
#: Unity's messages may exceed gRPC's 4 MiB default (many visual agents): accepted up to this.
MAX_MESSAGE_BYTES = 1 << 30
#: How long close() waits for Unity's next call to answer it with the 400 that makes Unity quit.
GOODBYE_WAIT = 2.0
_METHOD = "/communicator_objects.UnityToExternalProto/Exchange"

_TIMEOUT_CAUSES = (
    "The environment does not need user interaction to launch",
    'The Agents\' Behavior Parameters > Behavior Type is set to "Default"',
    "The environment and the Python interface have compatible versions.",
    "If you're running on a headless server without graphics support, turn off display by either passing "
    "--no-graphics option or build your Unity executable as server build.",
)


class UnityTimeoutError(EnvError):
    """Unity did not call within ``timeout_wait`` seconds."""


def versions_compatible(trainer: str, unity: str) -> bool:
    """Majors equal, and minors too while the major is 0 (Unity's rule)."""
    try:
        t = [int(p) for p in trainer.split(".")[:2]]
        u = [int(p) for p in unity.split(".")[:2]]
    except ValueError:
        return False
    if len(t) < 2 or len(u) < 2 or t[0] != u[0]:
        return False
    return t[0] != 0 or t[1] == u[1]


@dataclass
class _Call:
    message: UnityMessageProto
    reply: asyncio.Future[UnityMessageProto]


@dataclass
class _PlayerExited:
    returncode: int
    generation: int


class _Restart(Exception):
    """The player is gone (crashed, quit or silent): relaunch it if the policy allows."""


def _status(code: int) -> UnityMessageProto:
    return UnityMessageProto(header=HeaderProto(status=code))


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{returncode} ({signal.Signals(-returncode).name})"
    return str(returncode)


class UnityEnv:
    """A Unity Editor or player connected over ML-Agents' communicator (API 1.5.0).

    :param port: where to listen (the Editor's default is 5004; players get ``--mlagents-port``).
    :param launcher: starts a built player (``--env PATH``); None: wait for the Editor's Play button.
    :param seed: sent to Unity, which seeds its ``Random`` with it.
    :param num_areas: training areas Unity's ``TrainingAreaReplicator`` builds (at least 1).
    :param timeout_wait: seconds Unity may take for any call; for the Editor, the first call
        waits without limit (pressing Play is up to the user).
    :param engine_config: sent once, before the first reset; None sends nothing.
    :param environment_parameters: the channel of ``environment_parameters`` (its queued values go
        with the next exchange).
    :param parameters: the YAML ``environment_parameters`` (constants and samplers), sent with
        every reset: the first one, each ``reset()`` and each restarted player's.
    :param side_channels: the user's own channels, by their ids.
    :param restart_policy: how often a crashed or silent player is relaunched (players only).

    ``await env.start()`` (or ``async with``) listens, launches the player, completes the handshake
    and receives the first agents, so :attr:`behavior_specs` is known before training starts.
    """

    def __init__(
        self,
        port: int = EDITOR_PORT,
        *,
        launcher: PlayerLauncher | None = None,
        worker_id: int = 0,
        seed: int = 0,
        num_areas: int = 1,
        timeout_wait: float = 60.0,
        engine_config: EngineConfig | None = None,
        environment_parameters: EnvironmentParametersChannel | None = None,
        parameters: Mapping[str, Any] | None = None,
        side_channels: Sequence[SideChannel] = (),
        restart_policy: RestartPolicy | None = None,
    ) -> None:
        if num_areas < 1:
            raise EnvError(f"num_areas is {num_areas}: Unity needs at least 1 training area.")
        self.port = port
        self.launcher = launcher
        self.worker_id = worker_id
        self.seed = seed
        self.num_areas = num_areas
        self.timeout_wait = timeout_wait
        self.restart_policy = restart_policy or RestartPolicy()
        self.engine = EngineConfigurationChannel()
        self.environment_parameters = environment_parameters or EnvironmentParametersChannel()
        self.stats_channel = StatsSideChannel()
        self._engine_config = engine_config
        self._parameters = dict(parameters or {})
        self._channels = SideChannelManager(
            [self.environment_parameters, self.engine, self.stats_channel, *side_channels]
        )
        self._specs: dict[str, BehaviorSpec] = {}
        self._ignored: set[str] = set()
        self._inbox: asyncio.Queue[_Call | _PlayerExited] = asyncio.Queue()
        self._pending: _Call | None = None
        self._first: dict[str, StepBatch] | None = None
        #: Per behavior, the agents with an open episode: id → (observations of their last decision, row).
        self._open: dict[str, dict[int, tuple[list[npt.NDArray[np.float32]], int]]] = {}
        self._server: grpc.aio.Server | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._generation = 0
        self._watch: asyncio.Task[None] | None = None
        self._closed = False
        self._goodbye = asyncio.Event()  # set when a call after close() got its 400
        self._training = False
        #: Unity's handshake: its package and communication versions.
        self.unity_package_version = ""
        self.unity_communication_version = ""

    # ----- AsyncEnv ---------------------------------------------------------------------------

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        if not self._specs and self._first is None:
            raise EnvError("UnityEnv.behavior_specs is known once Unity connected: await env.start() first.")
        return self._specs

    async def start(self) -> None:
        """Listen, launch the player (if any), complete the handshake and receive the first agents."""
        if self._server is not None:
            return
        self._check_port_free()
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),  # a second trainer on this port fails, it does not share it
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._exchange,
            request_deserializer=UnityMessageProto.FromString,
            response_serializer=UnityMessageProto.SerializeToString,
        )
        service, method = _METHOD.rsplit("/", 1)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.lstrip("/"), {method: handler}),)
        )
        try:
            self._server.add_insecure_port(f"[::]:{self.port}")
        except RuntimeError as exc:
            raise self._port_in_use() from exc
        await self._server.start()
        try:
            if self.launcher is None:
                logger.info(
                    "Listening on port %d. Start training by pressing the Play button in the Unity Editor.", self.port
                )
                self._first = await self._connect(first_timeout=None)
            else:
                await self._launch()
                self._first = await self._connect(first_timeout=self.timeout_wait)
        except BaseException:
            await self.aclose()
            raise

    async def reset(self) -> dict[str, StepBatch]:
        await self.start()
        if self._first is not None:
            first, self._first = self._first, None
            self._training = True  # the behaviors are fixed from here on
            return first
        # A reset during the run: Unity ends every episode without reporting them.
        self._queue_parameters()
        return self._with_open_agents_interrupted(await self._exchange_step(self._reply(RESET, {})))

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        if self._pending is None:
            raise EnvError("UnityEnv.step() was called with no call from Unity open: call reset() first.")
        return await self._exchange_step(self._reply(STEP, actions))

    async def aclose(self) -> None:
        """Tell Unity to quit (a 400 reply), stop listening, and end the player (killed if it lingers)."""
        if self._closed:
            return
        self._closed = True
        answered = False
        calls = [self._pending] if self._pending is not None else []
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, _Call):
                calls.append(item)
        for call in calls:
            if not call.reply.done():
                call.reply.set_result(_status(400))
                answered = True
        self._pending = None
        if self._server is not None:
            if not answered and self.unity_package_version and self._unity_running():
                # Unity is between two calls: its next one gets the 400 (as with ML-Agents, where
                # the goodbye waits in the pipe), so it quits instead of finding the port closed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GOODBYE_WAIT):
                        await self._goodbye.wait()
            await self._server.stop(grace=1.0)
        await self._end_player(wait=self.timeout_wait)

    def _unity_running(self) -> bool:
        """The Editor (as far as we know), or a player process that has not exited."""
        if self.launcher is None:
            return True
        return self._process is not None and self._process.returncode is None

    async def __aenter__(self) -> UnityEnv:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----- the gRPC side ----------------------------------------------------------------------

    async def _exchange(self, request: UnityMessageProto, context: Any) -> UnityMessageProto:
        reply: asyncio.Future[UnityMessageProto] = asyncio.get_running_loop().create_future()
        if self._closed:
            self._goodbye.set()
            return _status(400)
        self._inbox.put_nowait(_Call(request, reply))
        return await reply

    async def _receive(self, timeout: float | None) -> _Call:
        """The next call from Unity; a player's exit, a 400 from a player or silence raise :class:`_Restart`."""
        while True:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._inbox.get()
            except TimeoutError:
                if self.launcher is None:
                    raise self._timeout_error() from None
                raise _Restart(f"no call from the player in {self.timeout_wait:g} s") from None
            if isinstance(item, _PlayerExited):
                if item.generation != self._generation:
                    continue  # a player replaced earlier
                raise _Restart(f"Environment shut down with return code {_exit_text(item.returncode)}.")
            if item.message.header.status == 400:
                item.reply.set_result(_status(400))
                if self.launcher is None:
                    raise EnvStoppedError("Unity closed the connection (Stop was pressed in the Editor).")
                raise _Restart("the player closed the connection")
            return item

    async def _connect(self, first_timeout: float | None) -> dict[str, StepBatch]:
        """The handshake (calls 1 and 2) and the first agents (call 3), which is held for the first actions."""
        first = await self._receive(first_timeout)
        init = first.message.unity_output.rl_initialization_output
        if not first.message.unity_output.HasField("rl_initialization_output"):
            first.reply.set_result(_status(400))
            raise EnvError("Unity's first message carried no handshake: is a Unity ML-Agents game on this port?")
        self.unity_package_version = init.package_version
        self.unity_communication_version = init.communication_version
        if not init.capabilities.baseRLCapabilities:
            logger.warning("Unity reports no base RL capabilities: unity_package_version %s.", init.package_version)
        first.reply.set_result(
            UnityMessageProto(
                header=HeaderProto(status=200),
                unity_input=UnityInputProto(
                    rl_initialization_input=UnityRLInitializationInputProto(
                        seed=self.seed,
                        communication_version=COMMUNICATION_API_VERSION,
                        package_version=TRAINER_PACKAGE_VERSION,
                        capabilities=UnityRLCapabilitiesProto(
                            baseRLCapabilities=True,
                            concatenatedPngObservations=True,
                            compressedChannelMapping=True,
                            hybridActions=True,
                            trainingAnalytics=True,
                            variableLengthObservation=True,
                            multiAgentGroups=True,
                        ),
                        num_areas=self.num_areas,
                    )
                ),
            )
        )
        second = await self._receive(self.timeout_wait)
        if not versions_compatible(COMMUNICATION_API_VERSION, init.communication_version):
            second.reply.set_result(_status(400))
            raise EnvError(
                "The communication API version is not compatible between Unity and python. Python API: "
                f"{COMMUNICATION_API_VERSION}, Unity API: {init.communication_version} (Unity package "
                f"{init.package_version or 'unknown'}). Use a com.unity.ml-agents package whose communication "
                "API is 1.x: 2.0 and later."
            )
        logger.info(
            "Connected to Unity environment with package version %s and communication version %s",
            init.package_version,
            init.communication_version,
        )
        if self._engine_config is not None:
            self.engine.set_configuration(self._engine_config)
        self._queue_parameters()
        self._pending = second
        return await self._exchange_step(self._reply(RESET, {}), restarting=False)

    def set_environment_parameters(self, values: Mapping[str, Any]) -> None:
        """The ``environment_parameters`` of the current lessons (seeds resolved): sent to Unity with the
        next message, and again after every restart of the game."""
        self._parameters = dict(values)
        if self._specs:  # connected: Unity reads them with the next reply
            self._queue_parameters()

    def _queue_parameters(self) -> None:
        if self._parameters:
            self.environment_parameters.set_parameters(self._parameters, self.seed)

    def _reply(self, command: int, actions: Mapping[str, ActionBatch]) -> UnityMessageProto:
        rl_input = UnityRLInputProto(command=command, side_channel=self._channels.encode_outgoing())  # type: ignore[arg-type]
        for name, batch in actions.items():
            spec = self._specs.get(name)
            if spec is None or not len(batch.agent_id):
                continue
            add_actions_to_proto(batch, spec.action_spec, rl_input.agent_actions[name].value)
        return UnityMessageProto(header=HeaderProto(status=200), unity_input=UnityInputProto(rl_input=rl_input))

    async def _exchange_step(self, reply: UnityMessageProto, *, restarting: bool = False) -> dict[str, StepBatch]:
        """Answer the open call with ``reply``, wait for Unity's next step, and convert it."""
        assert self._pending is not None
        pending, self._pending = self._pending, None
        if not pending.reply.done():  # Unity may have hung up meanwhile
            pending.reply.set_result(reply)
        try:
            call = await self._receive(self.timeout_wait)
        except _Restart as reason:
            if restarting or self.launcher is None:
                raise EnvError(f"The Unity player (worker {self.worker_id}) stopped answering: {reason}") from None
            return await self._restart(str(reason))
        self._pending = call
        return self._convert(call.message.unity_output.rl_output, call.message)

    def _convert(self, output: UnityRLOutputProto, message: UnityMessageProto) -> dict[str, StepBatch]:
        if output.side_channel:
            self._channels.process_incoming(output.side_channel)
        stats = tuple(EnvStat(k, v, a) for k, v, a in self.stats_channel.take_stats())
        brains = {b.brain_name: b for b in message.unity_output.rl_initialization_output.brain_parameters}
        out: dict[str, StepBatch] = {}
        for name, infos in output.agentInfos.items():
            values = infos.value
            if name not in self._specs and name in brains and len(values):
                if self._training:
                    self._ignore(name)
                else:
                    self._specs[name] = behavior_spec_from_proto(brains[name], values[0])
                    self._open[name] = {}
            spec = self._specs.get(name)
            if spec is None:
                continue  # a behavior with no spec yet (Unity's rule: its agents are dropped)
            batch = steps_from_proto(values, spec, name)
            if stats:
                batch = StepBatch(batch.decision, batch.terminal, stats)
            self._track(name, batch)
            out[name] = batch
        return out

    def _ignore(self, name: str) -> None:
        if name not in self._ignored:
            self._ignored.add(name)
            logger.warning(
                "Behavior '%s' sent its first agents after training started: its agents are not trained (they act "
                "with zeros). Let every behavior's agents request a decision at the first step.",
                name,
            )

    def _track(self, name: str, batch: StepBatch) -> None:
        open_agents = self._open[name]
        for aid in batch.terminal.agent_id.tolist():
            open_agents.pop(aid, None)
        obs = batch.decision.obs
        for row, aid in enumerate(batch.decision.agent_id.tolist()):
            open_agents[aid] = (obs, row)

    def _with_open_agents_interrupted(self, fresh: dict[str, StepBatch]) -> dict[str, StepBatch]:
        """Every agent of the episodes Unity dropped (a reset, a restart) ends as interrupted; then the new ones."""
        out: dict[str, StepBatch] = {}
        for name, spec in self._specs.items():
            gone = self._open.get(name, {})
            new = fresh.get(name)
            ids = list(gone)
            obs = [
                np.stack([gone[a][0][k][gone[a][1]] for a in ids]) if ids else np.zeros((0, *s.shape), np.float32)
                for k, s in enumerate(spec.observation_specs)
            ]
            terminal = TerminalSteps(
                obs, np.zeros(len(ids), np.float32), np.asarray(ids, np.int64), np.ones(len(ids), bool)
            )
            self._open[name] = {}
            if new is None:
                if ids:
                    out[name] = StepBatch(DecisionSteps.empty(spec), terminal)
                continue
            self._track(name, StepBatch(new.decision, TerminalSteps.empty(spec)))
            out[name] = StepBatch(new.decision, terminal, new.stats)
        return out

    async def _restart(self, reason: str) -> dict[str, StepBatch]:
        if not self.restart_policy.allow():
            raise EnvError(
                f"Worker {self.worker_id} exceeded the allowed number of restarts "
                f"({self.restart_policy.restarts} so far, --max-lifetime-restarts "
                f"{self.restart_policy.max_lifetime_restarts}, at most {self.restart_policy.rate_limit_n} per "
                f"{self.restart_policy.rate_limit_period_s:g} s): the player stopped after '{reason}'."
            )
        logger.warning("Restarting worker[%d] after '%s'", self.worker_id, reason)
        await self._end_player(wait=0.0)
        self._drain_inbox()
        await self._launch()
        try:
            fresh = await self._connect(first_timeout=self.timeout_wait)
        except _Restart as again:
            raise EnvError(f"The relaunched Unity player (worker {self.worker_id}) failed too: {again}") from None
        return self._with_open_agents_interrupted(fresh)

    def _drain_inbox(self) -> None:
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, _Call) and not item.reply.done():
                item.reply.set_result(_status(400))

    # ----- the player -------------------------------------------------------------------------

    async def _launch(self) -> None:
        assert self.launcher is not None
        self._generation += 1
        self._process = await self.launcher.launch(self.port)
        logger.debug("Launched %s", " ".join(self.launcher.arguments(self.port)))
        self._watch = asyncio.create_task(self._watch_player(self._process, self._generation))

    async def _watch_player(self, process: asyncio.subprocess.Process, generation: int) -> None:
        returncode = await process.wait()
        self._inbox.put_nowait(_PlayerExited(returncode, generation))

    async def _end_player(self, wait: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None and wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await process.wait()
        if process.returncode is None:
            if wait > 0:
                logger.info("Environment timed out shutting down. Killing...")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    # ----- errors -----------------------------------------------------------------------------

    def _check_port_free(self) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("localhost", self.port))
        except OSError as exc:
            raise self._port_in_use() from exc
        finally:
            probe.close()

    def _port_in_use(self) -> EnvError:
        return EnvError(
            f"Couldn't start socket communication because port {self.port} (worker number {self.worker_id}) is "
            "still in use. You may need to manually close a previously opened environment, or use other ports "
            "with --base-port."
        )

    def _timeout_error(self) -> UnityTimeoutError:
        causes = "".join(f"\n\t {cause}" for cause in _TIMEOUT_CAUSES)
        return UnityTimeoutError(
            f"The Unity environment took too long to respond ({self.timeout_wait:g} s, --timeout-wait). "
            f"Make sure that :{causes}"
        )
