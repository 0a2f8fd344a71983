"""SavedModel export: the serving signature computes the snapshot's policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import ExportError
from asynctrainer.export.savedmodel import SIGNATURE_KEY, export_saved_model, saved_model_output_names
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.testing.fakes import random_snapshot
from tests.export.export_cases import TWO_OBS, make_snapshot


def make_inputs(snap: PolicySnapshot, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    rng = np.random.default_rng(seed)
    obs = [(rng.normal(size=(n, *o.shape)) * 6.0).astype(np.float32) for o in snap.behavior_spec.observation_specs]
    a = snap.action_spec
    if not a.is_discrete():
        return obs, None
    mask = (rng.random((n, a.mask_size)) >= 0.4).astype(np.float32)
    start = 0
    for size in a.discrete_branches:
        branch = mask[:, start : start + size]
        empty = branch.sum(axis=1) == 0
        branch[empty, rng.integers(0, size, size=int(empty.sum()))] = 1.0
        start += size
    return obs, mask


def check_against_snapshot(serve: Any, snap: PolicySnapshot, n: int, seed: int) -> None:
    obs, mask = make_inputs(snap, n, seed)
    kwargs = {f"obs_{i}": o for i, o in enumerate(obs)}
    if mask is not None:
        kwargs["action_masks"] = mask
    out = {k: v.numpy() for k, v in serve(**kwargs).items()}
    assert sorted(out) == sorted(saved_model_output_names(snap))
    ref = snap.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
    a = snap.action_spec
    if a.is_continuous():
        got = out["deterministic_continuous_actions"]
        assert got.shape == (n, a.continuous_size) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref.continuous, rtol=0, atol=1e-5)
    if a.is_discrete():
        assert mask is not None
        got = out["deterministic_discrete_actions"]
        assert got.shape == (n, a.discrete_size) and got.dtype == np.int64
        np.testing.assert_array_equal(got, ref.discrete)
        _, branch_logp = snap.distribution_params(obs, mask)
        start = 0
        for b, (size, logp) in enumerate(zip(a.discrete_branches, branch_logp, strict=True)):
            probs = out[f"discrete_action_probs_{b}"]
            assert probs.shape == (n, size)
            np.testing.assert_allclose(probs, np.exp(logp), rtol=0, atol=1e-5)
            assert np.all(probs[mask[:, start : start + size] == 0] < 1e-6), "a masked action has probability"
            start += size


@pytest.mark.parametrize("case", ["discrete", "multi-discrete", "continuous", "hybrid", "tanh", "normalized"])
def test_serving_signature_matches_the_snapshot(case: str, tmp_path: Path) -> None:
    from asynctrainer.nn.tf_setup import tf

    snap = make_snapshot(case)
    path = export_saved_model(snap, tmp_path / "saved")
    assert path == tmp_path / "saved" and (path / "saved_model.pb").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no temporaries left

    loaded = tf().saved_model.load(str(path))
    serve = loaded.signatures[SIGNATURE_KEY]
    _, inputs = serve.structured_input_signature
    expected = {f"obs_{i}": [None, o.shape[0]] for i, o in enumerate(snap.behavior_spec.observation_specs)}
    if snap.action_spec.is_discrete():
        expected["action_masks"] = [None, snap.action_spec.mask_size]
    assert {k: v.shape.as_list() for k, v in inputs.items()} == expected
    assert all(v.dtype == tf().float32 for v in inputs.values())
    assert sorted(serve.structured_outputs) == sorted(saved_model_output_names(snap))
    for n in (1, 64):
        check_against_snapshot(serve, snap, n, seed=n)


def test_re_export_replaces_the_older_model(tmp_path: Path) -> None:
    from asynctrainer.nn.tf_setup import tf

    target = tmp_path / "Hybrid" / "saved_model"
    old = make_snapshot("hybrid")
    export_saved_model(old, target)
    new = random_snapshot("Hybrid", old.behavior_spec, version=5, seed=99, hidden=8)
    export_saved_model(new, target)
    assert [p.name for p in target.parent.iterdir()] == ["saved_model"]
    check_against_snapshot(tf().saved_model.load(str(target)).signatures[SIGNATURE_KEY], new, 16, seed=3)


def test_a_file_in_the_way_is_an_export_error(tmp_path: Path) -> None:
    target = tmp_path / "saved_model"
    target.write_text("not a directory")
    with pytest.raises(ExportError, match="a file of that name exists"):
        export_saved_model(make_snapshot("discrete"), target)
    assert target.read_text() == "not a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]


def test_non_vector_observations_are_refused(tmp_path: Path) -> None:
    spec = BehaviorSpec((ObservationSpec((8, 8, 3)),), ActionSpec.create_discrete((2,)))
    with pytest.raises(ExportError, match="supported are vector observations"):
        export_saved_model(random_snapshot("Visual", spec), tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []


def test_a_keras_actor_exports_to_both_formats(tmp_path: Path) -> None:
    """A snapshot taken from the TF networks exports, and both models act like it."""
    ort = pytest.importorskip("onnxruntime")
    from asynctrainer.export.onnx import export_onnx, onnx_feed
    from asynctrainer.nn.networks import ActorCritic
    from asynctrainer.nn.tf_setup import tf

    spec = BehaviorSpec(TWO_OBS, ActionSpec(2, (3, 2)))
    snap = ActorCritic(spec, hidden_units=32, num_layers=2, seed=1).snapshot("Keras", 1, 10)
    serve = tf().saved_model.load(str(export_saved_model(snap, tmp_path / "saved"))).signatures[SIGNATURE_KEY]
    check_against_snapshot(serve, snap, 32, seed=0)

    sess = ort.InferenceSession(str(export_onnx(snap, tmp_path / "Keras.onnx")), providers=["CPUExecutionProvider"])
    obs, mask = make_inputs(snap, 32, seed=1)
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, onnx_feed(snap, obs, mask)), strict=True))
    ref = snap.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
    np.testing.assert_allclose(out["deterministic_continuous_actions"], ref.continuous, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["deterministic_discrete_actions"], ref.discrete)
