"""UnityEnv against the Unity stand-in: the handshake, steps, actions, observations, side channels and close paths."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import grpc.aio
import numpy as np
import pytest

from asynctrainer.envs.spec import ActionBatch, ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.envs.unity.communicator_objects.agent_info_pb2 import AgentInfoProto
from asynctrainer.envs.unity.communicator_objects.observation_pb2 import ObservationProto
from asynctrainer.envs.unity.communicator_objects.unity_message_pb2 import UnityMessageProto
from asynctrainer.envs.unity.conversion import steps_from_proto
from asynctrainer.envs.unity.env import UnityEnv, UnityTimeoutError
from asynctrainer.envs.unity.side_channels import EngineConfig, SideChannel
from asynctrainer.errors import EnvError, EnvStoppedError, SettingsError, SpecError
from asynctrainer.settings.naming import split_behavior_id
from asynctrainer.testing.unity_standin import UnityStandIn, free_ports


async def connected(env: UnityEnv, standin: UnityStandIn) -> asyncio.Task[object]:
    """Start ``env`` with ``standin`` connecting to it; returns the stand-in's task."""
    task = asyncio.create_task(standin.run())
    await env.start()
    return task


def actions_for(env: UnityEnv, steps: dict, value: int = 1) -> dict[str, ActionBatch]:
    out = {}
    for name, batch in steps.items():
        spec = env.behavior_specs[name].action_spec
        n = len(batch.decision)
        out[name] = ActionBatch(
            np.full((n, spec.continuous_size), 0.2, np.float32),
            np.full((n, spec.discrete_size), value, np.int32),
            batch.decision.agent_id,
        )
    return out


async def test_handshake_sends_versions_capabilities_seed_and_the_engine_configuration_with_the_first_reset() -> None:
    port = free_ports()
    env = UnityEnv(port, seed=42, num_areas=3, timeout_wait=10, engine_config=EngineConfig())
    standin = UnityStandIn(port, max_steps=1)
    task = await connected(env, standin)
    steps = await env.reset()
    with pytest.raises(EnvStoppedError):  # Unity took one step, then Stop was pressed
        await env.step(actions_for(env, steps))
    record = await task
    await env.aclose()
    init = record.init_input
    assert init is not None and init.seed == 42 and init.num_areas == 3
    assert init.communication_version == "1.5.0"
    caps = init.capabilities
    assert all(
        getattr(caps, f)
        for f in (
            "baseRLCapabilities",
            "concatenatedPngObservations",
            "compressedChannelMapping",
            "hybridActions",
            "trainingAnalytics",
            "variableLengthObservation",
            "multiAgentGroups",
        )
    )
    assert record.first_input is not None and record.first_input.command == 1  # RESET
    assert record.engine_messages == [(0, (84, 84)), (1, 5), (2, 20.0), (3, -1), (4, 60)]
    assert env.unity_package_version == "3.0.0"


@pytest.mark.parametrize("version", ["2.0.0", "0.14.0"])
async def test_an_incompatible_communication_version_is_refused_naming_both_versions(version: str) -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, communication_version=version)
    task = asyncio.create_task(standin.run())
    with pytest.raises(EnvError, match=rf"Python API: 1\.5\.0, Unity API: {version}"):
        await env.start()
    record = await task
    assert record.final_status == 400


async def test_steps_carry_every_agent_and_each_gets_its_action_in_order() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, num_agents=4, behavior="1D?team=0")
    task = await connected(env, standin)
    steps = await env.reset()
    assert list(env.behavior_specs) == ["1D?team=0"]
    spec = env.behavior_specs["1D?team=0"]
    assert spec.action_spec.discrete_branches == (2,) and spec.observation_specs[0].shape == (1,)
    assert spec.observation_specs[0].name == "VectorSensor_size1"
    batch = steps["1D?team=0"]
    assert batch.decision.agent_id.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(batch.decision.obs[0][:, 0], standin.sim.goals["1D?team=0"])
    ended = 0
    for _ in range(12):  # always moving right: agents whose goal is +1 finish after 5 steps
        steps = await env.step(actions_for(env, steps))
        ended += len(steps["1D?team=0"].terminal)
    assert standin.record.actions[-1] == {"1D?team=0": 4}
    assert ended > 0
    await env.aclose()
    record = await task
    assert record.final_status == 400  # the trainer closing tells Unity to quit


async def test_episode_ends_and_interruptions_become_terminal_steps() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, num_agents=2)
    standin.sim.max_episode_steps = 3
    task = await connected(env, standin)
    steps = await env.reset()
    seen_interrupted = False
    for _ in range(6):
        steps = await env.step(actions_for(env, steps, value=0))  # moving left: goal +1 never reached
        terminal = steps["1D?team=0"].terminal
        if len(terminal):
            seen_interrupted |= bool(terminal.interrupted.any())
            assert set(terminal.agent_id.tolist()) <= set(steps["1D?team=0"].decision.agent_id.tolist())
    assert seen_interrupted or standin.sim.final_rewards["1D?team=0"]
    await env.aclose()
    await task


async def test_masks_arrive_flat_per_agent_with_true_masked() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, num_agents=3, masked_actions={0: [0]})
    task = await connected(env, standin)
    steps = await env.reset()
    mask = steps["1D?team=0"].decision.action_mask
    assert mask is not None and mask.tolist() == [[True, False]] * 3
    await env.aclose()
    await task


async def test_hybrid_actions_reach_unity_in_both_fields() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, action_sizes=(1, 1))
    task = await connected(env, standin)
    steps = await env.reset()
    spec = env.behavior_specs["1D?team=0"].action_spec
    assert (spec.continuous_size, spec.discrete_branches) == (1, (2,))
    before = standin.sim.positions["1D?team=0"].copy()
    await env.step(actions_for(env, steps))
    moved = standin.sim.positions["1D?team=0"] - before
    # continuous 0.2 and discrete 1 (+step): both halves of the action reached the game
    np.testing.assert_allclose(moved[0], [0.2, 0.2], atol=1e-6)
    await env.aclose()
    await task


@pytest.mark.parametrize("layout", ["chw", "hwc"])
async def test_png_cameras_of_unity_3_and_2_decode_channel_last(layout: str) -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, num_agents=2, visual=layout, image_size=(6, 8))  # type: ignore[arg-type]
    task = await connected(env, standin)
    steps = await env.reset()
    specs = env.behavior_specs["1D?team=0"].observation_specs
    assert [s.name for s in specs] == ["CameraSensor", "VectorSensor_size1"]
    assert specs[0].shape == (6, 8, 3) and specs[0].is_visual and specs[0].dimension_properties == (2, 2, 1)
    camera = steps["1D?team=0"].decision.obs[0]
    goals = standin.sim.goals["1D?team=0"]
    for i, goal in enumerate(goals):
        expected = np.full((6, 8, 3), 1.0 if goal > 0 else 0.0, np.float32)
        expected[0, :, 1] = 128 / 255
        np.testing.assert_allclose(camera[i], expected, atol=1e-6)
    await env.aclose()
    await task


async def test_the_games_stats_arrive_with_their_aggregation_and_unknown_channels_are_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, num_agents=2)
    task = await connected(env, standin)
    steps = await env.reset()
    stats = []
    for _ in range(8):
        steps = await env.step(actions_for(env, steps))
        stats += steps["1D?team=0"].stats
    keys = {(s.key, s.aggregation) for s in stats}
    assert keys == {("Custom/Goal", "average"), ("Custom/Episodes", "sum")}
    stranger = uuid.uuid4()
    blob = stranger.bytes_le + (2).to_bytes(4, "little") + b"hi"
    with caplog.at_level(logging.WARNING, logger="asynctrainer"):
        env._channels.process_incoming(blob + blob)
    assert [r.getMessage() for r in caplog.records].count(
        f"Unknown side channel data received. Channel type: {stranger}."
    ) == 1
    await env.aclose()
    await task


async def test_a_users_side_channel_sends_with_the_next_exchange_and_its_id_must_be_unique() -> None:
    channel = SideChannel(uuid.uuid4())
    with pytest.raises(SettingsError, match="Two side channels use the id"):
        UnityEnv(free_ports(), side_channels=[channel, SideChannel(channel.channel_id)])


async def test_environment_parameters_travel_with_the_next_exchange() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    env.environment_parameters.set_float_parameter("gravity", -9.5)
    env.environment_parameters.set_uniform_sampler_parameters("mass", 1.0, 2.0, seed=7)
    env.environment_parameters.set_multirangeuniform_sampler_parameters("size", [(1.0, 2.0), (4.0, 5.0)], seed=3)
    standin = UnityStandIn(port)
    task = await connected(env, standin)
    params = standin.record.environment_parameters
    assert params == {"gravity": -9.5, "mass": (0, 7, [1.0, 2.0]), "size": (2, 3, [1.0, 2.0, 4.0, 5.0])}
    await env.aclose()
    await task


async def test_stop_in_the_editor_is_a_clean_stop_not_an_error() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=10)
    standin = UnityStandIn(port, max_steps=3)
    task = await connected(env, standin)
    steps = await env.reset()
    with pytest.raises(EnvStoppedError):
        for _ in range(10):
            steps = await env.step(actions_for(env, steps))
    await env.aclose()
    assert (await task).final_status == 400


async def test_unity_silent_after_the_handshake_times_out_with_the_likely_causes() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=0.5)
    standin = UnityStandIn(port)

    async def handshake_then_hang() -> None:
        async with grpc.aio.insecure_channel(f"localhost:{port}") as channel:
            call = channel.unary_unary(
                "/communicator_objects.UnityToExternalProto/Exchange",
                request_serializer=UnityMessageProto.SerializeToString,
                response_deserializer=UnityMessageProto.FromString,
            )
            await channel.channel_ready()
            await call(standin._handshake())
            await asyncio.sleep(5)

    task = asyncio.create_task(handshake_then_hang())
    with pytest.raises(UnityTimeoutError, match=r"(?s)took too long to respond.*Behavior Type"):
        await env.start()
    task.cancel()


async def test_the_port_in_use_is_named_with_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EnvError, match=rf"port {port} .*--base-port"):
            await UnityEnv(port, timeout_wait=1).start()


async def test_an_oversized_message_from_many_visual_agents_is_accepted() -> None:
    port = free_ports()
    env = UnityEnv(port, timeout_wait=30)
    # 64 agents with a 256x256 camera: uncompressible noise would not be PNG-small; measured on the wire.
    standin = UnityStandIn(port, num_agents=64, visual="chw", image_size=(256, 256))
    task = await connected(env, standin)
    steps = await env.reset()
    assert steps["1D?team=0"].decision.obs[0].shape == (64, 256, 256, 3)
    await env.aclose()
    await task


async def test_behavior_ids_split_into_name_and_team() -> None:
    assert split_behavior_id("Striker?team=1") == ("Striker", 1)
    assert split_behavior_id("3DBall") == ("3DBall", 0)
    with pytest.raises(EnvError):
        split_behavior_id("X?team=blue")


# ----- conversion of one behavior's agent infos ----------------------------------------------------


def _infos(n: int, size: int, masks: dict[int, list[bool]]) -> list[AgentInfoProto]:
    return [
        AgentInfoProto(
            id=10 + i,
            reward=0.5 * i,
            done=i == n - 1,  # the last agent's episode ended
            action_mask=masks.get(i, []),
            observations=[ObservationProto(shape=[size], float_data=ObservationProto.FloatData(data=[i] * size))],
        )
        for i in range(n)
    ]


def test_agent_infos_become_decision_and_terminal_steps_with_masks_per_agent() -> None:
    spec = BehaviorSpec((ObservationSpec((3,)),), ActionSpec.create_discrete((2, 3)))
    batch = steps_from_proto(_infos(4, 3, {0: [True, False] + [False] * 3, 2: [False] * 4 + [True]}), spec, "B")
    assert batch.decision.agent_id.tolist() == [10, 11, 12] and batch.terminal.agent_id.tolist() == [13]
    np.testing.assert_array_equal(batch.decision.obs[0], [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    assert batch.decision.reward.tolist() == [0.0, 0.5, 1.0] and batch.terminal.reward.tolist() == [1.5]
    mask = batch.decision.action_mask
    assert mask is not None  # agent 11 sent none: nothing masked for it (Unity's rule)
    assert mask.tolist() == [[True, False, False, False, False], [False] * 5, [False] * 4 + [True]]
    every = steps_from_proto(_infos(3, 3, {0: [True] * 5, 1: [False] * 5}), spec, "B").decision.action_mask
    assert every is not None and every.tolist() == [[True] * 5, [False] * 5]
    assert steps_from_proto(_infos(3, 3, {}), spec, "B").decision.action_mask is None


def test_an_observation_of_the_wrong_size_or_missing_is_a_spec_error() -> None:
    spec = BehaviorSpec((ObservationSpec((4,), "Ray"),), ActionSpec.create_discrete((2,)))
    with pytest.raises(SpecError, match="'Ray' of behavior 'B' with 3 values where its shape \\[4\\] needs 4"):
        steps_from_proto(_infos(3, 3, {}), spec, "B")
    two = BehaviorSpec((ObservationSpec((3,)), ObservationSpec((3,))), spec.action_spec)
    with pytest.raises(SpecError, match="with 1 observations where its spec has 2 or more"):
        steps_from_proto(_infos(3, 3, {}), two, "B")
