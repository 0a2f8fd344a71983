"""Attention over variable-length observations: Keras, the snapshot's numpy pass and the ONNX graph agree,
padding entities are ignored and entity order does not matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asynctrainer.envs.spec import DIM_NONE, DIM_VARIABLE_SIZE, ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import SpecError
from asynctrainer.nn.normalizer import Normalizer
from asynctrainer.runtime.attention import EMBEDDING_SIZE, entity_padding
from asynctrainer.runtime.snapshot import PolicySnapshot

ENTITIES = (DIM_VARIABLE_SIZE, DIM_NONE)
VECTOR = ObservationSpec((3,), "ray")
BUFFER = ObservationSpec((6, 5), "buffer", ENTITIES)
OTHERS = ObservationSpec((4, 2), "others", ENTITIES)
LAYOUTS = {
    "vector+buffer": (VECTOR, BUFFER),
    "buffer only": (BUFFER,),
    "vector+two buffers": (VECTOR, BUFFER, OTHERS),
}


def observations(spec: BehaviorSpec, n: int, seed: int = 0) -> list[np.ndarray]:
    """Random observations; of each variable-length one, agent i has i % N + 1 entities, the rest zero."""
    rng = np.random.default_rng(seed)
    out = []
    for o in spec.observation_specs:
        x = rng.normal(size=(n, *o.shape)).astype(np.float32)
        if o.is_variable_length:
            present = np.arange(n) % o.shape[0] + 1
            x *= (np.arange(o.shape[0])[None, :] < present[:, None])[:, :, None]
        out.append(x)
    return out


def flat(xs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([x.reshape(len(x), -1) for x in xs], axis=1)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_keras_numpy_and_onnx_agree(layout: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from asynctrainer.export.onnx import MAX_OPSET, MIN_OPSET, export_onnx, onnx_feed
    from asynctrainer.nn.networks import ActorCritic

    spec = BehaviorSpec(LAYOUTS[layout], ActionSpec(2, (3,)))
    net = ActorCritic(spec, hidden_units=16, num_layers=1, seed=3)
    xs = observations(spec, 9)
    normalizer = Normalizer.for_spec(spec)
    normalizer.update(3.0 * flat(xs) + 1.0)
    snap = net.snapshot("b", 1, 0, normalizer.mean.astype(np.float32), normalizer.std)
    assert snap.attention is not None and all(e is None for e in snap.encoders)
    vectors = sum(o.size for o in spec.observation_specs if not o.is_variable_length)
    assert snap.feature_width() == vectors + EMBEDDING_SIZE == net.actor_encoder.output_size

    x = flat(xs)
    mean, _, logits = net.actor_outputs(normalizer.apply(x))
    np_mean, np_logp = snap.distribution_params(xs)
    assert np_mean is not None
    np.testing.assert_allclose(np_mean, mean.numpy(), atol=1e-5)
    tf_logits = logits.numpy()
    np.testing.assert_allclose(np_logp[0], tf_logits - np.log(np.exp(tf_logits).sum(1, keepdims=True)), atol=1e-5)

    restored = PolicySnapshot.from_payload(snap.to_payload())
    np.testing.assert_allclose(restored.distribution_params(xs)[0], np_mean, atol=1e-6)

    for opset in (MIN_OPSET, MAX_OPSET):
        path = export_onnx(snap, tmp_path / f"{opset}.onnx", opset=opset)
        session = ort.InferenceSession(str(path))
        shapes = [i.shape for i in session.get_inputs()]
        assert shapes[: len(spec.observation_specs)] == [["batch", *o.shape] for o in spec.observation_specs]
        (got,) = session.run(["deterministic_continuous_actions"], onnx_feed(snap, xs))
        np.testing.assert_allclose(
            got, snap.act(xs, deterministic=True, rng=np.random.default_rng()).continuous, atol=1e-5
        )


def test_padding_entities_and_their_order_do_not_change_the_encoding() -> None:
    from asynctrainer.nn.networks import ActorCritic

    spec = BehaviorSpec((VECTOR, BUFFER), ActionSpec(1, ()))
    snap = ActorCritic(spec, hidden_units=16, num_layers=1, seed=1).snapshot("b", 0, 0)
    vector, entities = observations(spec, 6, seed=2)
    base = snap.encode(flat([vector, entities]))

    noisy = entities.copy()
    padding = entity_padding(entities) == 1.0
    noisy[padding] = 0.02  # Σx² = 5 · 0.0004 < 0.01: still padding
    np.testing.assert_allclose(snap.encode(flat([vector, noisy])), base, atol=1e-6)

    shuffled = entities[:, ::-1]  # present entities move to the end, padding to the front
    np.testing.assert_allclose(snap.encode(flat([vector, shuffled])), base, atol=1e-5)

    changed = entities.copy()
    changed[:, 0] += 1.0  # a present entity changes: so does the encoding
    assert np.abs(snap.encode(flat([vector, changed])) - base).max() > 1e-3


def test_a_snapshot_without_attention_for_its_variable_length_observation_is_refused() -> None:
    spec = BehaviorSpec((VECTOR, BUFFER), ActionSpec(1, ()))
    with pytest.raises(SpecError, match="1 variable-length observations and 0 entity encoders"):
        PolicySnapshot.create(
            "b",
            0,
            0,
            spec,
            hidden=[(np.zeros((3, 4)), np.zeros(4))],
            discrete_head=None,
            continuous_head=(np.zeros((4, 1)), np.zeros(1)),
            log_std=np.zeros(1),
        )


def test_policy_server_refuses_a_snapshot_with_a_non_finite_attention_weight() -> None:
    import dataclasses

    from asynctrainer.nn.networks import ActorCritic
    from asynctrainer.runtime.attention import Attention
    from asynctrainer.runtime.encoders import Linear
    from asynctrainer.serving.server import SnapshotPolicy

    spec = BehaviorSpec((VECTOR, BUFFER), ActionSpec(1, ()))
    snap = ActorCritic(spec, hidden_units=16, num_layers=1, seed=1).snapshot("b", 0, 0)
    assert snap.attention is not None
    kernel = np.array(snap.attention.query.kernel)
    kernel[0, 0] = np.nan
    broken: Attention = snap.attention._replace(query=Linear(kernel, snap.attention.query.bias))
    with pytest.raises(SpecError, match="attention/query/kernel holds 1 NaN or infinite values"):
        SnapshotPolicy(dataclasses.replace(snap, attention=broken))
