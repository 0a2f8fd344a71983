"""Writing ``.demo`` files as com.unity.ml-agents 3.x does, streamed record by record.

Records go to a temporary sibling of the final path as they come; :meth:`DemonstrationWriter.close`
appends the copy of the meta that newer recorders write, rewrites the meta at offset 0 with the
final counts, fsyncs, and renames the file into place. A recording that never closes leaves only
the temporary (start-up clean-up of a run directory removes it), never a file with wrong counts.

Each record stores the action that *led to* its observation, as Unity's recorder does: the
writer is given the action chosen at each observation and keeps it for the agent's next record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from asynctrainer.demos.format import BRAIN_OFFSET, delimited
from asynctrainer.demos.reader import DEMO_SUFFIX
from asynctrainer.envs.spec import DIM_TRANSLATIONAL_EQUIVARIANCE, BehaviorSpec, ObservationSpec
from asynctrainer.envs.unity.communicator_objects.agent_action_pb2 import AgentActionProto
from asynctrainer.envs.unity.communicator_objects.agent_info_pb2 import AgentInfoProto
from asynctrainer.envs.unity.communicator_objects.brain_parameters_pb2 import (
    ActionSpecProto,
    BrainParametersProto,
)
from asynctrainer.envs.unity.communicator_objects.demonstration_pb2 import (
    AgentInfoActionPairProto,
    DemonstrationMetaProto,
)
from asynctrainer.envs.unity.communicator_objects.observation_pb2 import DEFAULT, GOAL_SIGNAL, ObservationProto
from asynctrainer.errors import DemonstrationError, SpecError, UsageError
from asynctrainer.files import fsync_dir, temp_sibling

__all__ = ["DemoEncoder", "DemonstrationWriter", "checked_demo_path"]

_NAME_CHARS = re.compile(r"[^A-Za-z0-9 \-]")
_NAME_LENGTH = 16  # Unity's limit, so that the meta fits before the brain parameters


def _observation_proto(spec: ObservationSpec, values: npt.NDArray[np.float32]) -> ObservationProto:
    """One observation as Unity 3.x sends it uncompressed: a visual one channel-first, ``[C, H, W]``."""
    proto = ObservationProto(
        name=spec.name, observation_type=GOAL_SIGNAL if spec.observation_type == "goal_signal" else DEFAULT
    )
    if spec.is_visual or (len(spec.shape) == 3 and not spec.dimension_properties):
        height, width, channels = spec.shape
        proto.shape.extend([channels, height, width])
        proto.dimension_properties.extend([1, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE])
        data = values.transpose(2, 0, 1)
    else:
        proto.shape.extend(spec.shape)
        proto.dimension_properties.extend(spec.dimension_properties)
        data = values
    proto.float_data.data.extend(data.ravel().tolist())
    return proto


class DemoEncoder:
    """The bytes of one ``.demo`` file, record by record, with Unity's counts (no file I/O).

    :meth:`start` gives the header and brain parameters, :meth:`record` each record, and
    :meth:`finish` the trailing meta and the final header that overwrites offset 0.
    """

    def __init__(self, spec: BehaviorSpec, behavior_name: str, *, team: int = 0, name: str = "") -> None:
        self.spec = spec
        self.brain_name = f"{behavior_name}?team={team}"
        self.name = _NAME_CHARS.sub("", name)[:_NAME_LENGTH]
        self.number_steps = 0
        self.done_records = 0
        self.reward_sum = 0.0
        self._last_action: dict[int, AgentActionProto] = {}

    def meta(self) -> DemonstrationMetaProto:
        episodes = self.done_records + 1
        return DemonstrationMetaProto(
            api_version=1,
            demonstration_name=self.name,
            number_steps=self.number_steps,
            number_episodes=episodes,
            mean_reward=self.reward_sum / episodes,
        )

    @staticmethod
    def header(meta: DemonstrationMetaProto) -> bytes:
        """The delimited meta padded to :data:`BRAIN_OFFSET` (a long name is shortened until it fits)."""
        data = delimited(meta.SerializeToString())
        while len(data) > BRAIN_OFFSET:
            meta.demonstration_name = meta.demonstration_name[:-1]
            data = delimited(meta.SerializeToString())
        return data.ljust(BRAIN_OFFSET, b"\0")

    def start(self) -> bytes:
        """The file's first bytes: the meta so far (rewritten by :meth:`finish`) and the brain parameters."""
        actions = self.spec.action_spec
        brain = BrainParametersProto(
            brain_name=self.brain_name,
            is_training=False,
            action_spec=ActionSpecProto(
                num_continuous_actions=actions.continuous_size,
                num_discrete_actions=actions.discrete_size,
                discrete_branch_sizes=list(actions.discrete_branches),
            ),
        )
        return self.header(self.meta()) + delimited(brain.SerializeToString())

    def _zero_action(self) -> AgentActionProto:
        actions = self.spec.action_spec
        return AgentActionProto(
            continuous_actions=[0.0] * actions.continuous_size, discrete_actions=[0] * actions.discrete_size
        )

    def _checked_action(
        self,
        continuous: Sequence[float] | npt.NDArray[np.float32] | None,
        discrete: Sequence[int] | npt.NDArray[np.int32] | None,
    ) -> AgentActionProto:
        actions = self.spec.action_spec
        c = np.asarray(continuous if continuous is not None else [], np.float32).ravel()
        d = np.asarray(discrete if discrete is not None else [], np.int64).ravel()
        if c.size != actions.continuous_size or d.size != actions.discrete_size:
            raise SpecError(
                f"A recorded action has {c.size} continuous and {d.size} discrete values where behavior "
                f"'{self.brain_name}' has {actions.continuous_size} and {actions.discrete_size}."
            )
        if not np.isfinite(c).all() or ((d < 0) | (d >= np.asarray(actions.discrete_branches, np.int64))).any():
            raise SpecError(
                f"A recorded action {c.tolist()}, {d.tolist()} is not finite or outside the branches "
                f"{list(actions.discrete_branches)}."
            )
        return AgentActionProto(continuous_actions=c.tolist(), discrete_actions=d.tolist())

    def record(
        self,
        agent_id: int,
        obs: Sequence[npt.ArrayLike],
        *,
        reward: float = 0.0,
        done: bool = False,
        interrupted: bool = False,
        continuous: Sequence[float] | npt.NDArray[np.float32] | None = None,
        discrete: Sequence[int] | npt.NDArray[np.int32] | None = None,
        mask: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
    ) -> bytes:
        """One record: an agent's observation, the reward that came with it, and the action chosen at it.

        ``obs`` holds one array per observation of the spec (visual ones channel-last). At a
        terminal (``done``) no action is given.

        :raises SpecError: the record does not fit the spec; nothing is counted then.
        """
        specs = self.spec.observation_specs
        if len(obs) != len(specs):
            raise SpecError(f"A recorded decision has {len(obs)} observations where the spec has {len(specs)}.")
        arrays = [np.asarray(o, np.float32) for o in obs]
        for k, (array, spec) in enumerate(zip(arrays, specs, strict=True)):
            if array.shape != spec.shape or not np.isfinite(array).all():
                raise SpecError(
                    f"Recorded observation {k} has shape {list(array.shape)} (or a non-finite value) where the spec "
                    f"needs finite values of shape {list(spec.shape)}."
                )
        with np.errstate(over="ignore"):
            as_stored = np.float32(reward)
        if not np.isfinite(as_stored):
            raise SpecError(f"A recorded reward of {reward} is not a finite float32.")
        chosen = None if done else self._checked_action(continuous, discrete)
        info = AgentInfoProto(
            reward=float(reward),
            done=done,
            max_step_reached=interrupted,
            id=int(agent_id),
            observations=[_observation_proto(s, a) for s, a in zip(specs, arrays, strict=True)],
        )
        if mask is not None:
            info.action_mask.extend(bool(m) for m in np.asarray(mask, bool).ravel())
        led_here = self._last_action.pop(int(agent_id), None) or self._zero_action()
        if chosen is not None:
            self._last_action[int(agent_id)] = chosen
        self.number_steps += 1
        self.done_records += int(done)
        self.reward_sum += float(reward)
        return delimited(AgentInfoActionPairProto(agent_info=info, action_info=led_here).SerializeToString())

    def finish(self) -> tuple[bytes, bytes]:
        """The trailing copy of the meta (appended) and the final header (written at offset 0)."""
        meta = self.meta()
        return meta.SerializeToString(), self.header(meta)


def checked_demo_path(path: str | Path) -> Path:
    """``path`` as a Path, when its name ends in ``.demo``."""
    out = Path(path)
    if out.suffix != DEMO_SUFFIX:
        raise DemonstrationError(
            f"Can't record a demonstration to {out}: the name must end in {DEMO_SUFFIX}.", path=str(out)
        )
    return out


class DemonstrationWriter:
    """Record one behavior's agents to a ``.demo`` file, synchronously (see :class:`DemoEncoder`).

    ``with DemonstrationWriter(path, spec, "Walker") as demo: demo.add(agent_id, obs, reward=r, continuous=a)``;
    a terminal is ``add(agent_id, obs, reward=r, done=True)``. Writes are buffered file writes:
    use it from a worker thread or a script; a server's loop uses
    :class:`~asynctrainer.demos.recorder.DemoRecorder`.

    :param name: the demonstration's name in the meta (sanitised to Unity's 16 characters);
        defaults to the file's stem.
    """

    def __init__(
        self, path: str | Path, spec: BehaviorSpec, behavior_name: str, *, team: int = 0, name: str | None = None
    ) -> None:
        self.path = checked_demo_path(path)
        self.encoder = DemoEncoder(spec, behavior_name, team=team, name=name if name is not None else self.path.stem)
        self._tmp = temp_sibling(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = open(self._tmp, "xb")  # noqa: SIM115 - closed by close() or abort()
        self._file.write(self.encoder.start())

    @property
    def number_steps(self) -> int:
        return self.encoder.number_steps

    def add(self, agent_id: int, obs: Sequence[npt.ArrayLike], **record: Any) -> None:
        """Record one agent's observation (:meth:`DemoEncoder.record` takes the same arguments)."""
        if self._file is None:
            raise UsageError(f"DemonstrationWriter for {self.path} is closed: nothing more can be recorded.")
        self._file.write(self.encoder.record(agent_id, obs, **record))

    def close(self) -> Path:
        """Finish the file (trailing meta, final counts at offset 0), make it durable, and move it into place."""
        if self._file is None:
            return self.path
        file, self._file = self._file, None
        try:
            trailer, header = self.encoder.finish()
            file.write(trailer)
            file.seek(0)
            file.write(header)
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            file.close()
            self._tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Stop recording and delete what was written."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> DemonstrationWriter:
        return self

    def __exit__(self, *_: object) -> None:
        """Close, also when the block raised: what was recorded is kept."""
        self.close()
