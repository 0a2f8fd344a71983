"""Goal conditioning (hypernetwork): Keras, the snapshot's numpy pass and the ONNX graph agree; goals are found
among the encoded observations; variable-length goals are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asynctrainer.app import check_observations
from asynctrainer.envs.spec import (
    DIM_NONE,
    DIM_TRANSLATIONAL_EQUIVARIANCE,
    DIM_VARIABLE_SIZE,
    ActionSpec,
    BehaviorSpec,
    ObservationSpec,
)
from asynctrainer.errors import UnsupportedFeatureError
from asynctrainer.runtime.conditioning import hyper_layer
from asynctrainer.runtime.snapshot import PolicySnapshot

VISUAL = (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)
RAY = ObservationSpec((3,), "ray")
GOAL = ObservationSpec((2,), "goal", (), "goal_signal")
CAMERA_GOAL = ObservationSpec((20, 20, 3), "camera_goal", VISUAL, "goal_signal")
BUFFER = ObservationSpec((6, 5), "buffer", (DIM_VARIABLE_SIZE, DIM_NONE))
LAYOUTS = {
    "vector goal": ((RAY, GOAL), 1, [3, 4]),
    "vector goal+buffer": ((GOAL, RAY, BUFFER), 2, [0, 1]),
    "visual goal": ((RAY, CAMERA_GOAL), 2, list(range(3, 3 + 16))),  # the camera's 16 encoded features
}


def snapshot_of(trainer: str, spec: BehaviorSpec, layers: int, **kwargs: bool) -> tuple[PolicySnapshot, object]:
    if trainer == "ppo":
        from asynctrainer.nn.networks import ActorCritic

        net = ActorCritic(spec, hidden_units=16, num_layers=layers, seed=4, **kwargs)
        return net.snapshot("b", 1, 0), lambda x: net.actor_outputs(x)[0].numpy()
    from asynctrainer.sac.networks import SACNetworks

    nets = SACNetworks(spec, hidden_units=16, num_layers=layers, seed=4, init_entcoef=1.0, **kwargs)
    return nets.actor.snapshot("b", 1, 0), lambda x: nets.actor.heads_of(x)[0].numpy()


@pytest.mark.parametrize("trainer", ["ppo", "sac"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_keras_numpy_and_onnx_agree(trainer: str, layout: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from asynctrainer.export.onnx import MAX_OPSET, MIN_OPSET, export_onnx, onnx_feed

    observations, layers, columns = LAYOUTS[layout]
    spec = BehaviorSpec(observations, ActionSpec(2, (3,)))
    snap, tf_mean = snapshot_of(trainer, spec, layers)
    assert snap.hyper is not None and len(snap.hidden) == layers - 1
    assert snap.goal_columns.tolist() == columns
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(7, *o.shape)).astype(np.float32) for o in observations]
    flat = np.concatenate([x.reshape(7, -1) for x in xs], axis=1)
    np_mean = snap.distribution_params(xs)[0]
    np.testing.assert_allclose(np_mean, tf_mean(flat), atol=1e-5)  # type: ignore[operator]
    restored = PolicySnapshot.from_payload(snap.to_payload())
    assert restored.hyper is not None
    np.testing.assert_allclose(restored.distribution_params(xs)[0], np_mean, atol=1e-6)
    for opset in (MIN_OPSET, MAX_OPSET):
        session = ort.InferenceSession(str(export_onnx(snap, tmp_path / f"{opset}.onnx", opset=opset)))
        (got,) = session.run(["deterministic_continuous_actions"], onnx_feed(snap, xs))
        expected = snap.act(xs, deterministic=True, rng=rng).continuous
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_goal_generates_the_last_layer_and_none_means_plain_inputs() -> None:
    spec = BehaviorSpec((RAY, GOAL), ActionSpec(1, ()))
    snap, _ = snapshot_of("ppo", spec, 2)
    assert snap.hyper is not None
    rng = np.random.default_rng(0)
    h = rng.normal(size=(5, 16)).astype(np.float32)  # one hidden input, two goals
    goal, other_goal = rng.normal(size=(2, 5, 2)).astype(np.float32)
    assert np.abs(hyper_layer(snap.hyper, h, goal) - hyper_layer(snap.hyper, h, other_goal)).max() > 1e-3

    plain, _ = snapshot_of("ppo", spec, 2, goal_conditioning=False)
    assert plain.hyper is None and len(plain.hidden) == 2
    unconditioned, _ = snapshot_of("ppo", BehaviorSpec((RAY,), spec.action_spec), 2)
    assert unconditioned.hyper is None  # no goal observation: plain layers whatever the setting


def test_a_variable_length_goal_is_refused_unless_conditioning_is_off() -> None:
    goal_buffer = ObservationSpec((6, 5), "targets", (DIM_VARIABLE_SIZE, DIM_NONE), "goal_signal")
    spec = BehaviorSpec((RAY, goal_buffer), ActionSpec.create_discrete((2,)))
    with pytest.raises(UnsupportedFeatureError, match="'targets' is a variable-length goal signal") as info:
        check_observations("Sorter", spec)
    assert info.value.key_path == "behaviors.Sorter.network_settings.goal_conditioning_type"
    check_observations("Sorter", spec, goal_conditioning="none")


def test_a_goal_layer_that_does_not_fit_is_refused_by_export_and_serving(tmp_path: Path) -> None:
    import dataclasses

    from asynctrainer.errors import ExportError, SpecError
    from asynctrainer.export.onnx import export_onnx
    from asynctrainer.runtime.encoders import Linear
    from asynctrainer.serving.server import SnapshotPolicy

    snap, _ = snapshot_of("ppo", BehaviorSpec((RAY, GOAL), ActionSpec(1, ())), 2)
    assert snap.hyper is not None
    first = snap.hyper.first
    narrow = snap.hyper._replace(first=Linear(first.kernel[:1], first.bias))  # reads a goal of 1, not 2
    broken = dataclasses.replace(snap, hyper=narrow)
    with pytest.raises(ExportError, match=r"goal-conditioned layer does not fit: hyper/first/kernel has shape"):
        export_onnx(broken, tmp_path / "m.onnx")
    with pytest.raises(SpecError, match=r"hyper/first/kernel has shape \(1, 16\), expected \(2, 16\)"):
        SnapshotPolicy(broken)
