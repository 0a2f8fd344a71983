"""What crosses a process boundary: plain dicts of numpy arrays, never project classes.

A Ray worker and the driver may not run the same version of asynctrainer's classes (a
rolling upgrade, a worker image built earlier), so trajectories and policy snapshots travel
as dicts of numpy arrays plus a small JSON-able header with a format tag, and are rebuilt on
the other side. Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import EnvError, SpecError
from asynctrainer.export.onnx_acting import accelerate
from asynctrainer.runtime.snapshot import SNAPSHOT_FORMAT, PolicySnapshot
from asynctrainer.runtime.trajectory import GroupData, Trajectory

__all__ = [
    "SNAPSHOT_FORMAT",
    "TRAJECTORY_FORMAT",
    "snapshot_from_payload",
    "snapshot_to_payload",
    "trajectory_from_dict",
    "trajectory_to_dict",
]

TRAJECTORY_FORMAT = "asynctrainer.Trajectory/1"

_ARRAYS = (
    "obs",
    "next_obs",
    "actions_continuous",
    "actions_discrete",
    "log_probs",
    "entropies",
    "rewards",
    "policy_versions",
)
_GROUP_ARRAYS = ("rewards", "mates_obs", "mates_continuous", "mates_discrete", "next_mates_obs")


def trajectory_to_dict(trajectory: Trajectory) -> dict[str, Any]:
    """A trajectory as ``str → numpy array | str | bool | float | int | None``."""
    out: dict[str, Any] = {name: getattr(trajectory, name) for name in _ARRAYS}
    out.update(
        format=TRAJECTORY_FORMAT,
        behavior_name=trajectory.behavior_name,
        agent_id=trajectory.agent_id,
        action_masks=trajectory.action_masks,
        memories=trajectory.memories,
        terminated=bool(trajectory.terminated),
        interrupted=bool(trajectory.interrupted),
        episode_return=None if trajectory.episode_return is None else float(trajectory.episode_return),
        episode_length=None if trajectory.episode_length is None else int(trajectory.episode_length),
    )
    group = trajectory.group
    out["group"] = (
        None
        if group is None
        else {"group_id": int(group.group_id), "all_done": bool(group.all_done)}
        | {name: getattr(group, name) for name in _GROUP_ARRAYS}
    )
    return out


def trajectory_from_dict(data: Mapping[str, Any]) -> Trajectory:
    """Inverse of :func:`trajectory_to_dict`.

    :raises EnvError: for a dict of another format (a worker running another version).
    """
    if data.get("format") != TRAJECTORY_FORMAT:
        raise EnvError(f"A worker sent a trajectory of format {data.get('format')!r}; expected {TRAJECTORY_FORMAT!r}.")
    masks = data["action_masks"]
    return Trajectory(
        behavior_name=str(data["behavior_name"]),
        agent_id=str(data["agent_id"]),
        obs=np.asarray(data["obs"], np.float32),
        next_obs=np.asarray(data["next_obs"], np.float32),
        actions_continuous=np.asarray(data["actions_continuous"], np.float32),
        actions_discrete=np.asarray(data["actions_discrete"], np.int32),
        log_probs=np.asarray(data["log_probs"], np.float32),
        entropies=np.asarray(data["entropies"], np.float32),
        rewards=np.asarray(data["rewards"], np.float32),
        action_masks=None if masks is None else np.asarray(masks, np.float32),
        policy_versions=np.asarray(data["policy_versions"], np.int64),
        terminated=bool(data["terminated"]),
        interrupted=bool(data["interrupted"]),
        episode_return=data["episode_return"],
        episode_length=data["episode_length"],
        memories=None if data.get("memories") is None else np.asarray(data["memories"], np.float32),
        group=_group_from_dict(data.get("group")),
    )


def _group_from_dict(data: Mapping[str, Any] | None) -> GroupData | None:
    if data is None:
        return None
    return GroupData(
        group_id=int(data["group_id"]),
        rewards=np.asarray(data["rewards"], np.float32),
        mates_obs=np.asarray(data["mates_obs"], np.float32),
        mates_continuous=np.asarray(data["mates_continuous"], np.float32),
        mates_discrete=np.asarray(data["mates_discrete"], np.int32),
        next_mates_obs=np.asarray(data["next_mates_obs"], np.float32),
        all_done=bool(data["all_done"]),
    )


def snapshot_to_payload(snapshot: PolicySnapshot) -> dict[str, Any]:
    """A snapshot as plain data for the object store (:meth:`PolicySnapshot.to_payload`)."""
    return snapshot.to_payload()


def snapshot_from_payload(payload: Mapping[str, Any], spec: BehaviorSpec | None = None) -> PolicySnapshot:
    """Inverse of :func:`snapshot_to_payload`; a worker passes its env's ``spec`` (keeping observation names).

    :raises EnvError: for a payload of another format.
    """
    try:
        snapshot = PolicySnapshot.from_payload(payload, spec)
    except SpecError as exc:
        raise EnvError(f"A policy payload arrived that cannot be used: {exc}") from exc
    return accelerate(snapshot)  # images act through onnxruntime, when installed
