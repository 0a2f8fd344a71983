"""Acting on images through onnxruntime computes what the snapshot's numpy ops compute."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from asynctrainer.envs.spec import DIM_NONE, DIM_TRANSLATIONAL_EQUIVARIANCE, ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import SettingsError
from asynctrainer.runtime.scheduling import acting_threads
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.testing.fakes import random_snapshot

pytest.importorskip("onnxruntime")

VISUAL = (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)
SPEC = BehaviorSpec(
    (
        ObservationSpec((20, 22, 3), "front", VISUAL),
        ObservationSpec((4,), "rays"),
        ObservationSpec((24, 20, 1), "top", VISUAL),
    ),
    ActionSpec(2, (3, 2)),
)


@pytest.fixture(scope="module")
def snapshot() -> PolicySnapshot:
    from asynctrainer.nn.networks import ActorCritic

    net = ActorCritic(SPEC, hidden_units=16, num_layers=1, seed=5, vis_encode_type="simple")
    mean = np.linspace(-1, 1, SPEC.observation_size).astype(np.float32)
    return net.snapshot("cams", 3, 0, mean, np.full(SPEC.observation_size, 2.0, np.float32))


def _obs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, *o.shape), dtype=np.float32) for o in SPEC.observation_specs]


def test_a_trainers_visual_snapshot_encodes_with_onnxruntime_as_numpy_does(snapshot: PolicySnapshot) -> None:
    numpy_only = dataclasses.replace(snapshot, image_encoder=None)
    assert snapshot.image_encoder is not None
    for n in (1, 7):
        obs = _obs(n, seed=n)
        mask = np.ones((n, 5), np.float32)
        mask[:, 1] = 0.0
        fast = snapshot.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
        slow = numpy_only.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
        np.testing.assert_allclose(fast.continuous, slow.continuous, atol=1e-5)
        np.testing.assert_array_equal(fast.discrete, slow.discrete)
        np.testing.assert_allclose(fast.log_prob, slow.log_prob, atol=1e-4)
        assert (fast.discrete[:, 0] != 1).all(), "the mask still applies"


def test_the_image_encoder_pickles_as_its_model(snapshot: PolicySnapshot) -> None:
    copy = pickle.loads(pickle.dumps(snapshot.image_encoder))
    images = [o for o, spec in zip(_obs(3), SPEC.observation_specs, strict=True) if spec.is_visual]
    assert snapshot.image_encoder is not None
    for a, b in zip(copy(images), snapshot.image_encoder(images), strict=True):
        np.testing.assert_array_equal(a, b)


def test_vector_snapshots_are_left_as_they_are() -> None:
    from asynctrainer.export.onnx_acting import accelerate

    vector = random_snapshot("v", BehaviorSpec((ObservationSpec((5,)),), ActionSpec(1, ())))
    assert accelerate(vector) is vector and vector.image_encoder is None


def test_a_payload_round_trip_through_a_worker_keeps_onnxruntime(snapshot: PolicySnapshot) -> None:
    from asynctrainer.scale.codec import snapshot_from_payload, snapshot_to_payload

    restored = snapshot_from_payload(snapshot_to_payload(snapshot), SPEC)
    assert restored.image_encoder is not None
    obs = _obs(4)
    np.testing.assert_allclose(
        restored.act(obs, deterministic=True, rng=np.random.default_rng(0)).continuous,
        snapshot.act(obs, deterministic=True, rng=np.random.default_rng(0)).continuous,
        atol=1e-6,
    )


async def test_policy_server_serves_a_visual_snapshot(snapshot: PolicySnapshot) -> None:
    from asynctrainer.serving.server import PolicyServer

    obs = _obs(1, seed=9)
    expected = snapshot.act(obs, deterministic=True, rng=np.random.default_rng(0))
    async with PolicyServer(dataclasses.replace(snapshot, image_encoder=None), deterministic=True) as server:
        action = await server.decide(0, [o[0] for o in obs])
    np.testing.assert_allclose(action.continuous, expected.continuous[0], atol=1e-5)
    np.testing.assert_array_equal(action.discrete, expected.discrete[0])


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_acting_thread_count_is_refused_naming_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCTRAINER_ACTING_THREADS", value)
    with pytest.raises(SettingsError, match=r"ASYNCTRAINER_ACTING_THREADS.*positive whole number") as info:
        acting_threads()
    assert info.value.key_path == "ASYNCTRAINER_ACTING_THREADS"
    monkeypatch.setenv("ASYNCTRAINER_ACTING_THREADS", "3")
    assert acting_threads() == 3
