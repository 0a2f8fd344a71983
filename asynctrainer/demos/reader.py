"""Demonstrations recorded in Unity (or by asynctrainer): ``.demo`` files as numpy experience.

:func:`load_demonstration` reads a file or a directory of them. A :class:`Demonstration` keeps
every record as stored and gives the transitions imitation learns from
(:meth:`Demonstration.transitions`): the observation, the action chosen at it, and the reward and
episode end that followed.

Two recorder generations differ in what a record's action is. Recorders before
com.unity.ml-agents 2.x store the action chosen *at* the record's observation (the last record's
is empty); later ones store the action that *led to* it (zeros at an agent's first record, the
last action at a terminal record). A file is of the later generation when its brain name carries
a ``?team=`` suffix or a copy of the meta follows its records, and :meth:`transitions` pairs
each observation with the right action either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from asynctrainer.demos.format import DemoFile, read_demo_file
from asynctrainer.envs.spec import ActionSpec, BehaviorSpec
from asynctrainer.envs.unity.communicator_objects.agent_info_pb2 import AgentInfoProto
from asynctrainer.envs.unity.communicator_objects.demonstration_pb2 import AgentInfoActionPairProto
from asynctrainer.envs.unity.conversion import behavior_spec_from_proto, observation_batch
from asynctrainer.errors import DemonstrationError, EnvError

__all__ = [
    "DEMO_SUFFIX",
    "DemoRecords",
    "DemoTransitions",
    "Demonstration",
    "load_demonstration",
]

DEMO_SUFFIX = ".demo"
Generation = Literal["action_at_observation", "action_before_observation"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DemoRecords:
    """Every record of one file, as stored, one row each (visual observations channel-last)."""

    obs: list[F32]
    reward: F32
    done: npt.NDArray[np.bool_]
    interrupted: npt.NDArray[np.bool_]
    agent_id: npt.NDArray[np.int64]
    continuous: F32
    discrete: npt.NDArray[np.int32]
    #: ``True`` where a record stored no action (the last record of older recorders).
    no_action: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.reward.shape[0])


@dataclass(frozen=True)
class DemoTransitions:
    """What imitation learns from: row ``i`` is an observation, the action taken at it, and what followed."""

    obs: list[F32]
    continuous: F32
    discrete: npt.NDArray[np.int32]
    #: The reward received after the action.
    reward: F32
    #: Whether the episode ended after the action.
    done: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.reward.shape[0])


@dataclass(frozen=True)
class Demonstration:
    """One behavior's demonstration: one ``.demo`` file or several with the same specs.

    :ivar brain_name: as recorded (``Name?team=N`` from newer recorders).
    :ivar number_steps: records in all files, as their metas announce.
    :ivar number_episodes: the metas' episode counts, summed.
    :ivar mean_reward: the first file's recorded mean reward per episode.
    """

    paths: tuple[Path, ...]
    brain_name: str
    spec: BehaviorSpec
    parts: tuple[DemoRecords, ...]
    generations: tuple[Generation, ...]
    number_steps: int
    number_episodes: int
    mean_reward: float

    @property
    def behavior_name(self) -> str:
        """The brain name without its ``?team=`` suffix."""
        return self.brain_name.partition("?")[0]

    def check_spec(self, spec: BehaviorSpec, behavior_name: str) -> None:
        """Raise :class:`DemonstrationError` naming the first difference between the demonstration's and ``spec``."""
        where = (
            f"The demonstration {_names(self.paths)} (behavior '{self.brain_name}') does not fit "
            f"behavior '{behavior_name}'"
        )
        ours, theirs = self.spec.action_spec, spec.action_spec
        if ours != theirs:
            raise DemonstrationError(
                f"{where}: it has {_describe_actions(ours)} and the behavior has {_describe_actions(theirs)}.",
                path=str(self.paths[0]),
            )
        if len(self.spec.observation_specs) != len(spec.observation_specs):
            raise DemonstrationError(
                f"{where}: it has {len(self.spec.observation_specs)} observations per agent and the behavior has "
                f"{len(spec.observation_specs)}.",
                path=str(self.paths[0]),
            )
        for k, (mine, other) in enumerate(zip(self.spec.observation_specs, spec.observation_specs, strict=True)):
            if mine.shape != other.shape:
                label = f"'{mine.name}'" if mine.name else f"{k}"
                raise DemonstrationError(
                    f"{where}: its observation {label} has shape {list(mine.shape)} and the behavior's observation "
                    f"{k} has shape {list(other.shape)}.",
                    path=str(self.paths[0]),
                )

    def transitions(self) -> DemoTransitions:
        """The (observation, action, reward, done) rows of every agent's episodes, in file order."""
        obs: list[list[F32]] = [[] for _ in self.spec.observation_specs]
        continuous, discrete, reward, done = [], [], [], []
        for part, generation in zip(self.parts, self.generations, strict=True):
            at, action, after = _transition_rows(part, generation)
            for k, o in enumerate(part.obs):
                obs[k].append(o[at])
            continuous.append(part.continuous[action])
            discrete.append(part.discrete[action])
            reward.append(part.reward[after])
            done.append(part.done[after])
        return DemoTransitions(
            [np.concatenate(o) for o in obs],
            np.concatenate(continuous),
            np.concatenate(discrete),
            np.concatenate(reward),
            np.concatenate(done),
        )


def _transition_rows(
    part: DemoRecords, generation: Generation
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Record indices of each transition: its observation, its action, and the record that followed.

    A transition starts at every record that is not a terminal and has a next record of the same
    agent (records of several agents may interleave).
    """
    order = np.argsort(part.agent_id, kind="stable")
    ids, done = part.agent_id[order], part.done[order]
    k = np.flatnonzero((ids[:-1] == ids[1:]) & ~done[:-1])
    at, after = order[k], order[k + 1]
    file_order = np.argsort(at, kind="stable")
    at, after = at[file_order], after[file_order]
    action = after if generation == "action_before_observation" else at
    if part.no_action[action].any():
        missing = int(action[np.flatnonzero(part.no_action[action])[0]])
        raise DemonstrationError(f"Can't load demonstration: record {missing} has no action where one is needed.")
    return at, action, after


def _describe_actions(spec: ActionSpec) -> str:
    parts = []
    if spec.continuous_size:
        parts.append(f"{spec.continuous_size} continuous actions")
    if spec.discrete_branches:
        parts.append(f"discrete branches {list(spec.discrete_branches)}")
    return " and ".join(parts)


def _names(paths: Sequence[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} files)"


def _generation(file: DemoFile) -> Generation:
    newer = "?team=" in file.brain.brain_name or bool(file.trailing)
    return "action_before_observation" if newer else "action_at_observation"


def _actions(
    records: Sequence[AgentInfoActionPairProto], spec: ActionSpec, path: Path
) -> tuple[F32, npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
    n, c, b = len(records), spec.continuous_size, spec.discrete_size
    continuous = np.zeros((n, c), np.float32)
    discrete = np.zeros((n, b), np.int32)
    no_action = np.zeros(n, bool)
    for i, record in enumerate(records):
        action = record.action_info
        if action.continuous_actions or action.discrete_actions:
            got_c, got_d = list(action.continuous_actions), list(action.discrete_actions)
        elif action.vector_actions_deprecated:  # older recorders: one list, continuous or discrete by the spec
            values = list(action.vector_actions_deprecated)
            got_c, got_d = (values, []) if c else ([], [int(v) for v in values])
        else:
            no_action[i] = True
            continue
        if len(got_c) != c or len(got_d) != b:
            raise DemonstrationError(
                f"Can't load demonstration {path}: record {i} has {len(got_c)} continuous and {len(got_d)} discrete "
                f"actions where its brain parameters say {c} and {b}.",
                path=str(path),
            )
        continuous[i], discrete[i] = got_c, got_d
    if b and ((discrete < 0) | (discrete >= np.asarray(spec.discrete_branches))).any():
        row = int(np.flatnonzero(((discrete < 0) | (discrete >= np.asarray(spec.discrete_branches))).any(axis=1))[0])
        raise DemonstrationError(
            f"Can't load demonstration {path}: record {row} has the discrete action {discrete[row].tolist()} outside "
            f"the branches {list(spec.discrete_branches)}.",
            path=str(path),
        )
    if not np.isfinite(continuous).all():
        raise DemonstrationError(f"Can't load demonstration {path}: a continuous action is not finite.", path=str(path))
    return continuous, discrete, no_action


def _records(file: DemoFile, spec: BehaviorSpec) -> DemoRecords:
    infos: list[AgentInfoProto] = [r.agent_info for r in file.records]
    try:
        obs = [observation_batch(infos, k, s, file.brain.brain_name) for k, s in enumerate(spec.observation_specs)]
    except EnvError as err:
        raise DemonstrationError(f"Can't load demonstration {file.path}: {err}", path=str(file.path)) from None
    n = len(infos)
    reward = np.fromiter((i.reward for i in infos), np.float32, n)
    if not np.isfinite(reward).all():
        raise DemonstrationError(f"Can't load demonstration {file.path}: a reward is not finite.", path=str(file.path))
    continuous, discrete, no_action = _actions(file.records, spec.action_spec, file.path)
    return DemoRecords(
        obs,
        reward,
        np.fromiter((i.done for i in infos), bool, n),
        np.fromiter((i.max_step_reached for i in infos), bool, n),
        np.fromiter((i.id for i in infos), np.int64, n),
        continuous,
        discrete,
        no_action,
    )


def _demo_paths(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix == DEMO_SUFFIX and p.is_file())
        if not found:
            raise DemonstrationError(
                f"Can't load demonstrations from {path}: the directory has no {DEMO_SUFFIX} file.", path=str(path)
            )
        return found
    if not path.exists():
        raise DemonstrationError(
            f"Can't load demonstration {path}: no such file or directory (demo_path takes a {DEMO_SUFFIX} file "
            "or a directory of them).",
            path=str(path),
        )
    if path.suffix != DEMO_SUFFIX:
        raise DemonstrationError(
            f"Can't load demonstration {path}: the file's name does not end in {DEMO_SUFFIX} (demo_path takes a "
            f"{DEMO_SUFFIX} file or a directory of them).",
            path=str(path),
        )
    return [path]


def load_demonstration(path: str | Path) -> Demonstration:
    """Read a ``.demo`` file, or every ``.demo`` file of a directory (all of one behavior's specs)."""
    files = [read_demo_file(p) for p in _demo_paths(Path(path))]
    specs = []
    for file in files:
        if not file.records:
            raise DemonstrationError(f"Can't load demonstration {file.path}: it holds no records.", path=str(file.path))
        try:
            specs.append(behavior_spec_from_proto(file.brain, file.records[0].agent_info))
        except EnvError as err:
            raise DemonstrationError(f"Can't load demonstration {file.path}: {err}", path=str(file.path)) from None
    for file, spec in zip(files[1:], specs[1:], strict=True):
        if spec != specs[0]:
            raise DemonstrationError(
                f"Can't load demonstrations from {Path(path)}: {file.path.name} has other specs than "
                f"{files[0].path.name} ({spec} against {specs[0]}).",
                path=str(file.path),
            )
    return Demonstration(
        paths=tuple(f.path for f in files),
        brain_name=files[0].brain.brain_name,
        spec=specs[0],
        parts=tuple(_records(f, specs[0]) for f in files),
        generations=tuple(_generation(f) for f in files),
        number_steps=sum(int(f.meta.number_steps) for f in files),
        number_episodes=sum(int(f.meta.number_episodes) for f in files),
        mean_reward=float(files[0].meta.mean_reward),
    )
