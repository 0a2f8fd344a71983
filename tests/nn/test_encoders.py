"""Visual encoders: the Keras networks, the snapshot's numpy ops and the ONNX graph compute one function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asynctrainer.app import check_observations
from asynctrainer.envs.spec import DIM_NONE, DIM_TRANSLATIONAL_EQUIVARIANCE, ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import SpecError
from asynctrainer.nn.normalizer import Normalizer
from asynctrainer.runtime.encoders import MIN_RESOLUTION, output_shape
from asynctrainer.runtime.snapshot import PolicySnapshot

VISUAL = (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)
#: Each encoder at (or just above) its minimum, with non-square images so height and width cannot be swapped.
CASES = [
    ("simple", (20, 24, 3)),
    ("nature_cnn", (36, 40, 3)),
    ("resnet", (15, 17, 3)),
    ("match3", (5, 6, 5)),
    ("fully_connected", (4, 3, 2)),
]


def spec_with_camera(shape: tuple[int, int, int]) -> BehaviorSpec:
    return BehaviorSpec((ObservationSpec((3,), "ray"), ObservationSpec(shape, "camera", VISUAL)), ActionSpec(2, (3,)))


@pytest.mark.parametrize(("kind", "shape"), CASES, ids=[c[0] for c in CASES])
def test_keras_numpy_and_onnx_agree(kind: str, shape: tuple[int, int, int], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from asynctrainer.export.onnx import export_onnx, onnx_feed
    from asynctrainer.nn.networks import ActorCritic

    spec = spec_with_camera(shape)
    net = ActorCritic(spec, hidden_units=16, num_layers=1, seed=3, vis_encode_type=kind)
    rng = np.random.default_rng(0)
    x = rng.random((6, spec.observation_size)).astype(np.float32)
    normalizer = Normalizer.for_spec(spec)
    normalizer.update(3.0 * x + 1.0)
    snap = net.snapshot("b", 1, 0, normalizer.mean.astype(np.float32), normalizer.std)
    assert snap.encoders[0] is None and snap.encoders[1] is not None
    assert output_shape(snap.encoders[1], shape) == (16,)

    mean, _, logits = net.actor_outputs(normalizer.apply(x))
    np_mean, np_logp = snap.distribution_params(x)
    assert np_mean is not None
    np.testing.assert_allclose(np_mean, mean.numpy(), atol=1e-5)
    tf_logits = logits.numpy()
    np.testing.assert_allclose(np_logp[0], tf_logits - np.log(np.exp(tf_logits).sum(1, keepdims=True)), atol=1e-5)

    # The trainer's snapshot encodes through onnxruntime; the payload's copy (no session) with numpy's ops.
    assert snap.image_encoder is not None
    restored = PolicySnapshot.from_payload(snap.to_payload())
    assert restored.behavior_spec == spec and restored.image_encoder is None
    np.testing.assert_allclose(restored.distribution_params(x)[0], np_mean, atol=1e-5)

    export_onnx(snap, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert session.get_inputs()[1].shape == ["batch", shape[2], shape[0], shape[1]]
    obs = [x[:, :3], x[:, 3:].reshape(6, *shape)]
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, onnx_feed(snap, obs)), strict=True))
    act = snap.act(obs, deterministic=True, rng=rng)
    np.testing.assert_allclose(out["deterministic_continuous_actions"], act.continuous, atol=1e-5)
    np.testing.assert_array_equal(out["deterministic_discrete_actions"], act.discrete)


@pytest.mark.parametrize("kind", list(MIN_RESOLUTION))
def test_an_image_below_the_encoders_minimum_is_refused_naming_it(kind: str) -> None:
    minimum = MIN_RESOLUTION[kind]
    check_observations("Cam", spec_with_camera((minimum, minimum + 3, 3)), kind)  # the minimum passes
    if minimum == 1:
        return
    with pytest.raises(SpecError) as caught:
        check_observations("Cam", spec_with_camera((minimum + 2, minimum - 1, 3)), kind)
    message = str(caught.value)
    assert f"'camera' is {minimum + 2}x{minimum - 1}" in message and f"'{kind}'" in message
    assert f"at least {minimum}x{minimum}" in message


def test_the_normaliser_of_a_spec_leaves_images_alone() -> None:
    spec = spec_with_camera((2, 2, 1))
    normalizer = Normalizer.for_spec(spec)
    x = np.random.default_rng(1).random((50, spec.observation_size)).astype(np.float32) * 10
    normalizer.update(x)
    out = normalizer.apply(x)
    np.testing.assert_array_equal(out[:, 3:], np.clip(x[:, 3:], -5, 5))  # pixels pass through
    assert np.abs(out[:, :3].mean(axis=0)).max() < 1e-4  # the vector part is standardised
    np.testing.assert_array_equal(normalizer.std[3:], 1.0)


def test_the_visual_simple_environment_shows_the_goal_in_every_image() -> None:
    import asyncio

    from asynctrainer.testing.simple_env import SimpleEnvironment

    env = SimpleEnvironment(num_vector=1, num_visual=2, num_agents=4, seed=5)
    batch = asyncio.run(env.reset())["1D"].decision
    assert [o.shape for o in batch.obs] == [(4, 1), (4, 20, 20, 3), (4, 20, 20, 3)]
    for o in batch.obs[1:]:
        np.testing.assert_array_equal(o, np.broadcast_to(env.goals["1D"][:, None, None, None], o.shape))
    assert [s.is_visual for s in env.behavior_specs["1D"].observation_specs] == [False, True, True]
    with pytest.raises(SpecError, match="at least one observation"):
        SimpleEnvironment(num_vector=0, num_visual=0)
