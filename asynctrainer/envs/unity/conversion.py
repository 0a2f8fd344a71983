"""Unity's messages ↔ the runtime's specs, steps and actions.

Unity reports per behavior a list of ``AgentInfoProto``: agents that need a decision
(``done`` false) and agents whose episode ended (``done``; ``max_step_reached`` = interrupted).
Observations come as floats or as PNG files; visual observations are returned channel-last,
``(H, W, C)``, whichever layout the game used (com.unity.ml-agents 3.x sends ``[C, H, W]``,
2.x ``[H, W, C]``, both under communication API 1.5.0: their dimension properties tell them apart).
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import MutableSequence, Sequence

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import (
    DIM_TRANSLATIONAL_EQUIVARIANCE,
    ActionBatch,
    ActionSpec,
    BehaviorSpec,
    DecisionSteps,
    ObservationSpec,
    ObservationType,
    StepBatch,
    TerminalSteps,
)
from asynctrainer.envs.unity.communicator_objects.agent_action_pb2 import AgentActionProto
from asynctrainer.envs.unity.communicator_objects.agent_info_pb2 import AgentInfoProto
from asynctrainer.envs.unity.communicator_objects.brain_parameters_pb2 import BrainParametersProto
from asynctrainer.envs.unity.communicator_objects.observation_pb2 import (
    GOAL_SIGNAL,
    PNG,
    ObservationProto,
)
from asynctrainer.errors import EnvError, SpecError

__all__ = [
    "add_actions_to_proto",
    "behavior_spec_from_proto",
    "decode_png_observation",
    "observation_batch",
    "observation_spec_from_proto",
    "steps_from_proto",
]

F32 = npt.NDArray[np.float32]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEADER = struct.Struct(">I4s")


def _is_channel_first(proto: ObservationProto) -> bool:
    """3.x visual observations are ``[C, H, W]`` with dimension properties ``[1, 2, 2]``; 2.x send ``[H, W, C]``."""
    dims = proto.dimension_properties
    te = DIM_TRANSLATIONAL_EQUIVARIANCE
    return len(dims) == 3 and dims[0] != te and dims[1] == te and dims[2] == te


def observation_spec_from_proto(proto: ObservationProto) -> ObservationSpec:
    shape = tuple(int(d) for d in proto.shape)
    dims = tuple(int(d) for d in proto.dimension_properties)
    if len(shape) == 3:
        if _is_channel_first(proto):
            shape = (shape[1], shape[2], shape[0])
            dims = (dims[1], dims[2], dims[0]) if dims else dims
        if not dims:
            dims = (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, 1)
    kind: ObservationType = "goal_signal" if proto.observation_type == GOAL_SIGNAL else "default"
    return ObservationSpec(shape, proto.name, dims, kind)


def behavior_spec_from_proto(brain: BrainParametersProto, first_info: AgentInfoProto) -> BehaviorSpec:
    """The spec of a behavior: actions from its brain parameters, observations from its first agent's info."""
    spec = brain.action_spec
    if spec.num_continuous_actions or spec.num_discrete_actions:
        actions = ActionSpec(int(spec.num_continuous_actions), tuple(int(b) for b in spec.discrete_branch_sizes))
    elif brain.vector_action_space_type_deprecated == 1:  # continuous, from packages before hybrid actions
        actions = ActionSpec.create_continuous(int(brain.vector_action_size_deprecated[0]))
    else:
        actions = ActionSpec.create_discrete(tuple(int(b) for b in brain.vector_action_size_deprecated))
    observations = tuple(observation_spec_from_proto(o) for o in first_info.observations)
    return BehaviorSpec(observations, actions)


def _png_files(data: bytes) -> list[bytes]:
    """Split concatenated PNG files at their IEND chunks (a signature inside image data cannot fool it)."""
    files: list[bytes] = []
    start = 0
    while start < len(data):
        if data[start : start + 8] != _PNG_SIGNATURE:
            raise EnvError(f"Unity sent a compressed observation that is not PNG data at byte {start}.")
        offset = start + 8
        while True:
            if offset + _CHUNK_HEADER.size > len(data):
                raise EnvError("Unity sent a PNG observation that is cut short (no IEND chunk).")
            length, kind = _CHUNK_HEADER.unpack_from(data, offset)
            offset += _CHUNK_HEADER.size + length + 4  # header, data, CRC
            if kind == b"IEND":
                break
        files.append(data[start:offset])
        start = offset
    return files


def decode_png_observation(
    data: bytes, shape: Sequence[int], mapping: Sequence[int] = (), *, channel_first: bool = True
) -> F32:
    """One agent's PNG observation as float32 in [0, 1], channel-last ``(H, W, C)``.

    ``data`` holds one or more RGB PNG files (Unity packs more than 3 channels into several).
    With a channel ``mapping``, output channel k is the mean of the decoded channels mapped to
    k and -1 drops a channel (a stacked grayscale camera); without one, a 1-channel shape takes
    the mean of the first image's RGB and otherwise the first channels are kept.
    """
    from PIL import Image

    images = []
    for png in _png_files(data):
        with Image.open(io.BytesIO(png)) as image:
            array = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
        images.append(array[:, :, None] if array.ndim == 2 else array)
    decoded = np.concatenate(images, axis=2).astype(np.float32) / 255.0
    height, width = (shape[1], shape[2]) if channel_first else (shape[0], shape[1])
    channels = shape[0] if channel_first else shape[2]
    if mapping:
        if len(mapping) != decoded.shape[2]:
            raise EnvError(
                f"Unity sent a PNG observation with {decoded.shape[2]} channels and a channel mapping of "
                f"{len(mapping)}: they must be equal."
            )
        targets = sorted({m for m in mapping if m >= 0})
        if targets != list(range(len(targets))):
            raise EnvError(f"Unity sent the channel mapping {list(mapping)}: its values must be -1 or 0..k.")
        index = np.asarray(mapping)
        out = np.stack([decoded[:, :, index == k].mean(axis=2) for k in targets], axis=2)
    elif channels == 1:
        out = decoded[:, :, :3].mean(axis=2, keepdims=True)
    else:
        out = decoded[:, :, :channels]
    if out.shape != (height, width, channels):
        raise EnvError(
            f"Unity sent a PNG observation that decodes to {out.shape[2]} channels of {out.shape[0]}x{out.shape[1]} "
            f"where its shape {list(shape)} says {channels} of {height}x{width}."
        )
    return out


def _observation_protos(infos: Sequence[AgentInfoProto], index: int, name: str) -> list[ObservationProto]:
    try:
        return [info.observations[index] for info in infos]
    except IndexError:
        count = min(len(info.observations) for info in infos)
        raise SpecError(
            f"Unity sent an agent of behavior '{name}' with {count} observations where its spec has {index + 1} "
            "or more."
        ) from None


def _wrong_size(spec: ObservationSpec, name: str, got: int) -> SpecError:
    return SpecError(
        f"Unity sent observation '{spec.name}' of behavior '{name}' with {got} values where its "
        f"shape {list(spec.shape)} needs {spec.size}."
    )


def observation_batch(infos: Sequence[AgentInfoProto], index: int, spec: ObservationSpec, name: str) -> F32:
    """Observation ``index`` of every agent, stacked and channel-last: ``[n, *spec.shape]``."""
    n, size = len(infos), spec.size
    protos = _observation_protos(infos, index, name)
    if len(spec.shape) < 3:  # floats only (Unity compresses cameras alone): one copy of every agent's values
        data = [proto.float_data.data for proto in protos]
        wrong = next((len(values) for values in data if len(values) != size), None)
        if wrong is not None:
            raise _wrong_size(spec, name, wrong)
        out = np.fromiter(itertools.chain.from_iterable(data), np.float32, n * size).reshape(n, *spec.shape)
        if n and not np.isfinite(out).all():
            raise EnvError(f"The observations provided had NaN values: observation '{spec.name}' of behavior '{name}'.")
        return out
    out = np.empty((n, *spec.shape), np.float32)
    for i, proto in enumerate(protos):
        channel_first = _is_channel_first(proto)
        if proto.compression_type == PNG:
            out[i] = decode_png_observation(
                proto.compressed_data, proto.shape, proto.compressed_channel_mapping, channel_first=channel_first
            )
            continue
        values = np.asarray(proto.float_data.data, np.float32)
        if values.size != size:
            raise _wrong_size(spec, name, values.size)
        out[i] = values.reshape(proto.shape).transpose(1, 2, 0) if channel_first else values.reshape(spec.shape)
    return out


def _rewards(infos: Sequence[AgentInfoProto], name: str) -> tuple[F32, F32]:
    reward = np.fromiter((info.reward for info in infos), np.float32, len(infos))
    group_reward = np.fromiter((info.group_reward for info in infos), np.float32, len(infos))
    if not (np.isfinite(reward).all() and np.isfinite(group_reward).all()):
        raise EnvError(f"The rewards provided had NaN values: behavior '{name}' sent a NaN or infinite reward.")
    return reward, group_reward


def steps_from_proto(infos: Sequence[AgentInfoProto], spec: BehaviorSpec, name: str) -> StepBatch:
    """Split one behavior's infos into the agents that need a decision and those whose episode ended."""
    decisions = [info for info in infos if not info.done]
    terminals = [info for info in infos if info.done]
    mask_size = spec.action_spec.mask_size

    def common(group: list[AgentInfoProto]) -> tuple[list[F32], F32, npt.NDArray[np.int64], F32, npt.NDArray[np.int64]]:
        obs = [observation_batch(group, k, s, name) for k, s in enumerate(spec.observation_specs)]
        reward, group_reward = _rewards(group, name)
        agent_id = np.fromiter((info.id for info in group), np.int64, len(group))
        group_id = np.fromiter((info.group_id for info in group), np.int64, len(group))
        return obs, reward, agent_id, group_reward, group_id

    d_obs, d_reward, d_id, d_group_reward, d_group = common(decisions)
    mask = None
    masks = [info.action_mask for info in decisions] if mask_size else []
    if masks and all(len(m) == mask_size for m in masks):  # every agent sent one: one copy
        mask = np.fromiter(itertools.chain.from_iterable(masks), bool, len(masks) * mask_size)
        mask = mask.reshape(len(masks), mask_size)
    elif any(len(m) == mask_size for m in masks):
        mask = np.zeros((len(decisions), mask_size), bool)
        for i, m in enumerate(masks):
            if len(m) == mask_size:  # another length: Unity's rule, nothing masked
                mask[i] = np.fromiter(m, bool, mask_size)
    t_obs, t_reward, t_id, t_group_reward, t_group = common(terminals)
    interrupted = np.fromiter((info.max_step_reached for info in terminals), bool, len(terminals))
    grouped = bool(d_group.any() or t_group.any())
    decision = DecisionSteps(
        d_obs,
        d_reward,
        d_id,
        mask,
        group_id=d_group if grouped else None,
        group_reward=d_group_reward if grouped else None,
    )
    terminal = TerminalSteps(
        t_obs,
        t_reward,
        t_id,
        interrupted,
        group_id=t_group if grouped else None,
        group_reward=t_group_reward if grouped else None,
    )
    return StepBatch(decision, terminal)


def add_actions_to_proto(batch: ActionBatch, spec: ActionSpec, into: MutableSequence[AgentActionProto]) -> None:
    """Append one ``AgentActionProto`` per deciding agent to ``into``, in the order of its ``DecisionSteps``.

    ``into`` is the repeated field itself (``rl_input.agent_actions[name].value``): each message is
    built in place, not built and then copied in.
    """
    n = int(batch.agent_id.shape[0])
    if spec.continuous_size and not np.isfinite(batch.continuous).all():
        raise SpecError("An action for Unity is not finite: continuous actions must be finite floats.")
    continuous = batch.continuous.tolist() if spec.continuous_size else [[]] * n
    discrete = batch.discrete.tolist() if spec.discrete_size else [[]] * n
    add = into.add  # type: ignore[attr-defined]
    for c, d in zip(continuous, discrete, strict=True):
        add(continuous_actions=c, discrete_actions=d)
