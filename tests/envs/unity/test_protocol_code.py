"""The Unity protocol's generated code: current with its .proto files, and Unity's on the wire.

The expected field tables below are ML-Agents' communicator messages (communication API 1.5.0):
a renamed or renumbered field, a wrong type or a missing message fails here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from google.protobuf import descriptor

from asynctrainer.envs.unity.communicator_objects import (
    agent_action_pb2,
    agent_info_pb2,
    brain_parameters_pb2,
    capabilities_pb2,
    demonstration_pb2,
    engine_configuration_pb2,
    header_pb2,
    observation_pb2,
    training_analytics_pb2,
    unity_message_pb2,
    unity_rl_initialization_pb2,
    unity_rl_pb2,
    unity_to_external_pb2,
)

FOLDER = Path(unity_message_pb2.__file__).parent
FD = descriptor.FieldDescriptor
T = {
    FD.TYPE_INT32: "int32",
    FD.TYPE_FLOAT: "float",
    FD.TYPE_BOOL: "bool",
    FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes",
    FD.TYPE_MESSAGE: "message",
    FD.TYPE_ENUM: "enum",
}

# message → "number name type [repeated]" for every field, as Unity's C# side defines them.
EXPECTED: dict[str, list[str]] = {
    "HeaderProto": ["1 status int32", "2 message string"],
    "UnityMessageProto": ["1 header message", "2 unity_output message", "3 unity_input message"],
    "UnityOutputProto": ["1 rl_output message", "2 rl_initialization_output message"],
    "UnityInputProto": ["1 rl_input message", "2 rl_initialization_input message"],
    "UnityRLInitializationOutputProto": [
        "1 name string",
        "2 communication_version string",
        "3 log_path string",
        "5 brain_parameters message repeated",
        "7 package_version string",
        "8 capabilities message",
    ],
    "UnityRLInitializationInputProto": [
        "1 seed int32",
        "2 communication_version string",
        "3 package_version string",
        "4 capabilities message",
        "5 num_areas int32",
    ],
    "UnityRLCapabilitiesProto": [
        "1 baseRLCapabilities bool",
        "2 concatenatedPngObservations bool",
        "3 compressedChannelMapping bool",
        "4 hybridActions bool",
        "5 trainingAnalytics bool",
        "6 variableLengthObservation bool",
        "7 multiAgentGroups bool",
    ],
    "UnityRLOutputProto": ["2 agentInfos message repeated", "3 side_channel bytes"],
    "UnityRLOutputProto.ListAgentInfoProto": ["1 value message repeated"],
    "UnityRLInputProto": ["1 agent_actions message repeated", "4 command enum", "5 side_channel bytes"],
    "UnityRLInputProto.ListAgentActionProto": ["1 value message repeated"],
    "AgentInfoProto": [
        "7 reward float",
        "8 done bool",
        "9 max_step_reached bool",
        "10 id int32",
        "11 action_mask bool repeated",
        "13 observations message repeated",
        "14 group_id int32",
        "15 group_reward float",
    ],
    "ObservationProto": [
        "1 shape int32 repeated",
        "2 compression_type enum",
        "3 compressed_data bytes",
        "4 float_data message",
        "5 compressed_channel_mapping int32 repeated",
        "6 dimension_properties int32 repeated",
        "7 observation_type enum",
        "8 name string",
    ],
    "ObservationProto.FloatData": ["1 data float repeated"],
    "AgentActionProto": [
        "1 vector_actions_deprecated float repeated",
        "4 value float",
        "6 continuous_actions float repeated",
        "7 discrete_actions int32 repeated",
    ],
    "BrainParametersProto": [
        "3 vector_action_size_deprecated int32 repeated",
        "5 vector_action_descriptions_deprecated string repeated",
        "6 vector_action_space_type_deprecated enum",
        "7 brain_name string",
        "8 is_training bool",
        "9 action_spec message",
    ],
    "ActionSpecProto": [
        "1 num_continuous_actions int32",
        "2 num_discrete_actions int32",
        "3 discrete_branch_sizes int32 repeated",
        "4 action_descriptions string repeated",
    ],
    "DemonstrationMetaProto": [
        "1 api_version int32",
        "2 demonstration_name string",
        "3 number_steps int32",
        "4 number_episodes int32",
        "5 mean_reward float",
    ],
    "AgentInfoActionPairProto": ["1 agent_info message", "2 action_info message"],
    "EngineConfigurationProto": [
        "1 width int32",
        "2 height int32",
        "3 quality_level int32",
        "4 time_scale float",
        "5 target_frame_rate int32",
        "6 show_monitor bool",
    ],
    "CustomResetParametersProto": [],
    "TrainingEnvironmentInitialized": [
        "1 mlagents_version string",
        "2 mlagents_envs_version string",
        "3 python_version string",
        "4 torch_version string",
        "5 torch_device_type string",
        "6 num_envs int32",
        "7 num_environment_parameters int32",
        "8 run_options string",
    ],
    "TrainingBehaviorInitialized": [
        "1 behavior_name string",
        "2 trainer_type string",
        "3 extrinsic_reward_enabled bool",
        "4 gail_reward_enabled bool",
        "5 curiosity_reward_enabled bool",
        "6 rnd_reward_enabled bool",
        "7 behavioral_cloning_enabled bool",
        "8 recurrent_enabled bool",
        "9 visual_encoder string",
        "10 num_network_layers int32",
        "11 num_network_hidden_units int32",
        "12 trainer_threaded bool",
        "13 self_play_enabled bool",
        "14 curriculum_enabled bool",
        "15 config string",
    ],
}

ENUMS = {
    "CommandProto": {"STEP": 0, "RESET": 1, "QUIT": 2},
    "CompressionTypeProto": {"NONE": 0, "PNG": 1},
    "ObservationTypeProto": {"DEFAULT": 0, "GOAL_SIGNAL": 1},
    "SpaceTypeProto": {"discrete": 0, "continuous": 1},
}

MODULES = [
    agent_action_pb2,
    agent_info_pb2,
    brain_parameters_pb2,
    capabilities_pb2,
    demonstration_pb2,
    engine_configuration_pb2,
    header_pb2,
    observation_pb2,
    training_analytics_pb2,
    unity_message_pb2,
    unity_rl_initialization_pb2,
    unity_rl_pb2,
    unity_to_external_pb2,
]


def _messages() -> dict[str, descriptor.Descriptor]:
    found: dict[str, descriptor.Descriptor] = {}

    def walk(d: descriptor.Descriptor) -> None:
        found[d.full_name.removeprefix("communicator_objects.")] = d
        for nested in d.nested_types:
            if not nested.GetOptions().map_entry:
                walk(nested)

    for module in MODULES:
        for d in module.DESCRIPTOR.message_types_by_name.values():
            walk(d)
    return found


def _repeated(field: descriptor.FieldDescriptor) -> bool:
    # protobuf 7 has is_repeated and no label; older runtimes have label.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FD.LABEL_REPEATED)


def test_every_message_and_field_is_unitys() -> None:
    messages = _messages()
    assert set(messages) == set(EXPECTED)
    for name, fields in EXPECTED.items():
        got = [
            f"{f.number} {f.name} {T[f.type]}" + (" repeated" if _repeated(f) else "")
            for f in sorted(messages[name].fields, key=lambda f: f.number)
        ]
        assert got == fields, name


def test_enums_and_the_package() -> None:
    enums = {}
    for module in MODULES:
        assert module.DESCRIPTOR.package == "communicator_objects"
        enums.update(
            {e.name: {v.name: v.number for v in e.values} for e in module.DESCRIPTOR.enum_types_by_name.values()}
        )
    assert enums == ENUMS


def test_the_service_path_is_unitys() -> None:
    service = unity_to_external_pb2.DESCRIPTOR.services_by_name["UnityToExternalProto"]
    (method,) = service.methods
    assert f"/{service.full_name}/{method.name}" == "/communicator_objects.UnityToExternalProto/Exchange"
    assert method.input_type.name == method.output_type.name == "UnityMessageProto"


def test_wire_bytes_of_a_handshake_reply() -> None:
    msg = unity_message_pb2.UnityMessageProto()
    msg.header.status = 200
    init = msg.unity_input.rl_initialization_input
    init.seed = 7
    init.communication_version = "1.5.0"
    init.num_areas = 1
    init.capabilities.baseRLCapabilities = True
    # header{status=200}; unity_input(3){rl_initialization_input(2){seed, version, capabilities{1:true}, num_areas}}
    assert msg.SerializeToString().hex() == "0a0308c8011a11120f08071205312e352e30220208012801"


def test_the_generated_code_is_current_with_the_proto_files() -> None:
    recorded = json.loads((FOLDER / "generated.json").read_text(encoding="utf-8"))

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    protos = {p.name: digest(p) for p in sorted(FOLDER.glob("*.proto"))}
    outputs = {
        p.name: digest(p) for p in sorted(FOLDER.iterdir()) if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    }
    stale = sorted(name for name in protos if recorded["protos"].get(name) != protos[name])
    assert not stale, f"{stale} changed since the code was generated: run `nox -s protos`"
    assert recorded["protos"] == protos
    edited = sorted(name for name in outputs if recorded["outputs"].get(name) != outputs[name])
    assert not edited and recorded["outputs"] == outputs, f"generated files edited by hand: {edited}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_each_module_has_its_stub(module: object) -> None:
    assert Path(module.__file__).with_suffix(".pyi").is_file()  # type: ignore[attr-defined]
