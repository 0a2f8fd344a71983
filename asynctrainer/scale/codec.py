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

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import EnvError
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.trajectory import Trajectory

__all__ = [
    "SNAPSHOT_FORMAT",
    "TRAJECTORY_FORMAT",
    "snapshot_from_payload",
    "snapshot_to_payload",
    "trajectory_from_dict",
    "trajectory_to_dict",
]

TRAJECTORY_FORMAT = "asynctrainer.Trajectory/1"
SNAPSHOT_FORMAT = "asynctrainer.PolicySnapshot/1"

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


def trajectory_to_dict(trajectory: Trajectory) -> dict[str, Any]:
    """A trajectory as ``str → numpy array | str | bool | float | int | None``."""
    out: dict[str, Any] = {name: getattr(trajectory, name) for name in _ARRAYS}
    out.update(
        format=TRAJECTORY_FORMAT,
        behavior_name=trajectory.behavior_name,
        agent_id=trajectory.agent_id,
        action_masks=trajectory.action_masks,
        terminated=bool(trajectory.terminated),
        interrupted=bool(trajectory.interrupted),
        episode_return=None if trajectory.episode_return is None else float(trajectory.episode_return),
        episode_length=None if trajectory.episode_length is None else int(trajectory.episode_length),
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
    )


def snapshot_to_payload(snapshot: PolicySnapshot) -> dict[str, Any]:
    """A snapshot as ``{"header": JSON-able dict, "arrays": {name: ndarray}}`` (as ``save`` writes it)."""
    a = snapshot.action_spec
    header = {
        "format": SNAPSHOT_FORMAT,
        "behavior_name": snapshot.behavior_name,
        "version": snapshot.version,
        "step": snapshot.step,
        "observation_shapes": [list(o.shape) for o in snapshot.behavior_spec.observation_specs],
        "continuous_size": a.continuous_size,
        "discrete_branches": list(a.discrete_branches),
        "num_hidden": len(snapshot.hidden),
        "tanh_squash": snapshot.tanh_squash,
    }
    return {"header": header, "arrays": dict(snapshot.weights())}


def snapshot_from_payload(payload: Mapping[str, Any], spec: BehaviorSpec | None = None) -> PolicySnapshot:
    """Inverse of :func:`snapshot_to_payload`.

    :param spec: the behavior spec to attach (a worker passes its env's, keeping observation
        names); by default it is rebuilt from the header's shapes.
    :raises EnvError: for a payload of another format.
    """
    header = payload["header"]
    if header.get("format") != SNAPSHOT_FORMAT:
        raise EnvError(f"A policy payload of format {header.get('format')!r} arrived; expected {SNAPSHOT_FORMAT!r}.")
    w = payload["arrays"]
    if spec is None:
        spec = BehaviorSpec(
            tuple(ObservationSpec(tuple(s)) for s in header["observation_shapes"]),
            ActionSpec(header["continuous_size"], tuple(header["discrete_branches"])),
        )

    def pair(name: str) -> tuple[Any, Any] | None:
        return (w[f"{name}/kernel"], w[f"{name}/bias"]) if f"{name}/kernel" in w else None

    return PolicySnapshot.create(
        header["behavior_name"],
        int(header["version"]),
        int(header["step"]),
        spec,
        hidden=[(w[f"hidden_{i}/kernel"], w[f"hidden_{i}/bias"]) for i in range(header["num_hidden"])],
        discrete_head=pair("discrete_head"),
        continuous_head=pair("continuous_head"),
        log_std=w.get("log_std"),
        obs_mean=w.get("obs_mean"),
        obs_std=w.get("obs_std"),
        tanh_squash=bool(header["tanh_squash"]),
    )
