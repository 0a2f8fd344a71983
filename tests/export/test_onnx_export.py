"""ONNX export: ML-Agents' contract (names, order, shapes, constants) and parity with the snapshot."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import ExportError, SpecError
from asynctrainer.export.onnx import export_onnx, onnx_feed, onnx_input_names, onnx_output_names
from asynctrainer.runtime.snapshot import Dense, PolicySnapshot
from asynctrainer.testing.fakes import random_snapshot
from tests.export.export_cases import make_snapshot, readonly

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CASES = ["discrete", "multi-discrete", "continuous", "hybrid", "tanh", "normalized", "two-layers"]
DISCRETE_CASES = ["discrete", "multi-discrete", "hybrid", "normalized", "two-layers"]


def make_obs(snap: PolicySnapshot, n: int, seed: int, scale: float = 3.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n, *o.shape)) * scale).astype(np.float32) for o in snap.behavior_spec.observation_specs]


def make_mask(snap: PolicySnapshot, n: int, seed: int, p_forbidden: float = 0.4) -> np.ndarray:
    """A random 0/1 mask ``[n, sum(branches)]`` with at least one allowed action per branch."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((n, snap.action_spec.mask_size)) >= p_forbidden).astype(np.float32)
    start = 0
    for size in snap.action_spec.discrete_branches:
        branch = mask[:, start : start + size]
        empty = branch.sum(axis=1) == 0
        branch[empty, rng.integers(0, size, size=int(empty.sum()))] = 1.0
        start += size
    return mask


def session(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feed), strict=True))


# ----- the contract -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_names_order_shapes_and_types_follow_mlagents(case: str, tmp_path: Path) -> None:
    snap = make_snapshot(case)
    a = snap.action_spec
    path = export_onnx(snap, tmp_path / f"{case}.onnx")
    assert path == tmp_path / f"{case}.onnx" and path.is_file()

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 4  # the lowest IR for opset 9, set explicitly (onnx 1.23 stamps 14)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 9)]  # ML-Agents' (Barracuda reads it)

    sess = session(path)
    obs_sizes = [o.shape[0] for o in snap.behavior_spec.observation_specs]
    expected_inputs = [(f"obs_{i}", ["batch", size]) for i, size in enumerate(obs_sizes)]
    if a.is_discrete():
        expected_inputs.append(("action_masks", ["batch", a.mask_size]))
    assert [(i.name, i.shape) for i in sess.get_inputs()] == expected_inputs
    assert all(i.type == "tensor(float)" for i in sess.get_inputs())
    assert [i.name for i in sess.get_inputs()] == onnx_input_names(snap)

    expected_outputs: list[tuple[str, list[Any], str]] = [
        ("version_number", [1], "float"),
        ("memory_size", [1], "float"),
    ]
    if a.is_continuous():
        c = a.continuous_size
        expected_outputs += [
            ("continuous_actions", ["batch", c], "float"),
            ("continuous_action_output_shape", [1], "float"),
            ("deterministic_continuous_actions", ["batch", c], "float"),
        ]
    if a.is_discrete():
        nb = a.discrete_size
        expected_outputs += [
            ("discrete_actions", ["batch", nb], "int64"),
            ("discrete_action_output_shape", [1, nb], "float"),
            ("deterministic_discrete_actions", ["batch", nb], "int64"),
        ]
    got = [(o.name, o.shape, o.type) for o in sess.get_outputs()]
    assert got == [(n, s, f"tensor({t})") for n, s, t in expected_outputs]
    assert [o.name for o in sess.get_outputs()] == onnx_output_names(snap)


@pytest.mark.parametrize("case", CASES)
def test_constants(case: str, tmp_path: Path) -> None:
    snap = make_snapshot(case)
    a = snap.action_spec
    out = run(session(export_onnx(snap, tmp_path / "m.onnx")), onnx_feed(snap, make_obs(snap, 2, 0)))
    expected: dict[str, np.ndarray] = {
        "version_number": np.array([3.0], np.float32),
        "memory_size": np.array([0.0], np.float32),
    }
    if a.is_continuous():
        expected["continuous_action_output_shape"] = np.array([float(a.continuous_size)], np.float32)
    if a.is_discrete():
        expected["discrete_action_output_shape"] = np.array([list(a.discrete_branches)], np.float32)
    for name, value in expected.items():
        assert out[name].dtype == np.float32, name
        np.testing.assert_array_equal(out[name], value, err_msg=name)


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("case", CASES)
def test_deterministic_outputs_match_the_snapshot(case: str, n: int, tmp_path: Path) -> None:
    snap = make_snapshot(case)
    a = snap.action_spec
    sess = session(export_onnx(snap, tmp_path / "m.onnx"))
    obs = make_obs(snap, n, seed=n)
    mask = make_mask(snap, n, seed=n) if a.is_discrete() else None
    out = run(sess, onnx_feed(snap, obs, mask))
    ref = snap.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
    if a.is_continuous():
        assert out["deterministic_continuous_actions"].shape == (n, a.continuous_size)
        np.testing.assert_allclose(out["deterministic_continuous_actions"], ref.continuous, rtol=0, atol=1e-5)
        assert out["continuous_actions"].shape == (n, a.continuous_size)
        assert np.all(np.abs(out["continuous_actions"]) <= 1.0)
    if a.is_discrete():
        assert out["deterministic_discrete_actions"].shape == (n, a.discrete_size)
        assert out["deterministic_discrete_actions"].dtype == np.int64
        np.testing.assert_array_equal(out["deterministic_discrete_actions"], ref.discrete)
        assert out["discrete_actions"].shape == (n, a.discrete_size)
        assert out["discrete_actions"].dtype == np.int64


def test_normalisation_clips_at_five_standard_deviations(tmp_path: Path) -> None:
    snap = make_snapshot("normalized")
    assert snap.obs_mean is not None and snap.obs_std is not None
    obs = make_obs(snap, 256, seed=3, scale=20.0)  # most features land beyond ±5 std
    flat = np.concatenate(obs, axis=1)
    assert (np.abs((flat - snap.obs_mean) / snap.obs_std) > 5).mean() > 0.5
    mask = make_mask(snap, 256, seed=3)
    out = run(session(export_onnx(snap, tmp_path / "m.onnx")), onnx_feed(snap, obs, mask))
    ref = snap.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
    np.testing.assert_allclose(out["deterministic_continuous_actions"], ref.continuous, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["deterministic_discrete_actions"], ref.discrete)
    # Without the normaliser the same inputs give other actions, so the graph really applies it.
    plain = dataclasses.replace(snap, obs_mean=None, obs_std=None)
    other = plain.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
    assert not np.allclose(other.continuous, ref.continuous, atol=1e-3)


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 21])
def test_every_supported_opset_loads_and_matches(opset: int, tmp_path: Path) -> None:
    snap = make_snapshot("normalized")
    path = export_onnx(snap, tmp_path / "m.onnx", opset=opset)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == opset
    assert model.ir_version == onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    if opset == 9:
        assert model.ir_version == 4
    obs, mask = make_obs(snap, 32, 1), make_mask(snap, 32, 1)
    out = run(session(path), onnx_feed(snap, obs, mask))
    ref = snap.act(obs, mask, deterministic=True, rng=np.random.default_rng(0))
    np.testing.assert_allclose(out["deterministic_continuous_actions"], ref.continuous, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["deterministic_discrete_actions"], ref.discrete)


# ----- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", DISCRETE_CASES)
def test_sampled_discrete_actions_never_pick_a_masked_action(case: str, tmp_path: Path) -> None:
    snap = make_snapshot(case)
    sess = session(export_onnx(snap, tmp_path / "m.onnx"))
    n = 4000
    obs = make_obs(snap, n, seed=11, scale=5.0)
    mask = make_mask(snap, n, seed=12, p_forbidden=0.6)
    # The unmasked policy's favourite action is forbidden on every row of the first branch,
    # so the mask must be what keeps it from being drawn.
    top = snap.act(obs, None, deterministic=True, rng=np.random.default_rng(0)).discrete[:, 0]
    mask[np.arange(n), top] = 0.0
    size0 = snap.action_spec.discrete_branches[0]
    empty = mask[:, :size0].sum(axis=1) == 0
    mask[empty, (top[empty] + 1) % size0] = 1.0
    for _ in range(3):
        actions = run(sess, onnx_feed(snap, obs, mask))["discrete_actions"]
        start = 0
        for b, size in enumerate(snap.action_spec.discrete_branches):
            assert actions[:, b].min() >= 0 and actions[:, b].max() < size
            chosen = mask[np.arange(n), start + actions[:, b]]
            assert (chosen == 1.0).all(), f"branch {b}: a masked action was sampled"
            start += size


def test_sampled_discrete_actions_follow_the_policy_probabilities(tmp_path: Path) -> None:
    snap = make_snapshot("multi-discrete")
    sess = session(export_onnx(snap, tmp_path / "m.onnx"))
    n = 8000
    obs = [np.repeat(o[:1] * 0.3, n, axis=0) for o in make_obs(snap, 1, seed=4)]
    mask = np.ones((n, snap.action_spec.mask_size), np.float32)
    mask[:, 3] = 0.0  # branch 1, action 1
    _, branch_logp = snap.distribution_params([o[:1] for o in obs], mask[:1])
    actions = run(sess, onnx_feed(snap, obs, mask))["discrete_actions"]
    for b, logp in enumerate(branch_logp):
        probs = np.exp(logp[0])
        freq = np.bincount(actions[:, b], minlength=probs.size) / n
        np.testing.assert_allclose(freq, probs, atol=0.03, err_msg=f"branch {b}")
    assert (actions[:, 1] != 1).all()


@pytest.mark.parametrize("case", ["continuous", "tanh", "hybrid"])
def test_sampled_continuous_actions_are_the_policy_gaussian(case: str, tmp_path: Path) -> None:
    snap = make_snapshot(case)
    assert snap.continuous_head is not None
    head = Dense(readonly(snap.continuous_head.kernel * 0.1), snap.continuous_head.bias)  # means well inside ±3
    snap = dataclasses.replace(snap, continuous_head=head, log_std=readonly(np.log([0.2, 0.4])))
    n = 8000
    row = make_obs(snap, 1, seed=9)
    mean, _ = snap.distribution_params(row)
    assert mean is not None and np.all(np.abs(mean) < 1.5), "pick a row whose mean is far from the clip"
    obs = [np.repeat(o, n, axis=0) for o in row]
    sess = session(export_onnx(snap, tmp_path / "m.onnx"))
    out = run(sess, onnx_feed(snap, obs))
    sampled = out["continuous_actions"].astype(np.float64)
    raw = np.arctanh(sampled) if snap.tanh_squash else sampled * 3.0  # undo the env transform
    std = np.array([0.2, 0.4])
    np.testing.assert_allclose(raw.mean(axis=0), mean[0], atol=float(4 * std.max() / np.sqrt(n)))
    np.testing.assert_allclose(raw.std(axis=0), std, rtol=0.05)
    assert np.abs(sampled).max() <= 1.0
    # Each run draws afresh (the node has no seed attribute, as in ML-Agents' export).
    again = run(sess, onnx_feed(snap, obs))["continuous_actions"]
    assert not np.array_equal(again, out["continuous_actions"])


def test_continuous_actions_are_clipped_to_three_std_units(tmp_path: Path) -> None:
    snap = make_snapshot("continuous")
    assert snap.continuous_head is not None
    snap = dataclasses.replace(
        snap, continuous_head=Dense(readonly(snap.continuous_head.kernel * 50), snap.continuous_head.bias)
    )
    obs = make_obs(snap, 64, seed=2)
    sess = session(export_onnx(snap, tmp_path / "m.onnx"))
    out = run(sess, onnx_feed(snap, obs))
    det = out["deterministic_continuous_actions"]
    assert np.isclose(np.abs(det), 1.0).mean() > 0.5  # most means lie beyond ±3
    assert np.abs(out["continuous_actions"]).max() <= 1.0
    ref = snap.act(obs, deterministic=True, rng=np.random.default_rng(0))
    np.testing.assert_allclose(det, ref.continuous, rtol=0, atol=1e-5)


# ----- refusals and files -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8, 3), (4, 2), ()])
def test_observations_without_an_encoder_are_refused(shape: tuple[int, ...], tmp_path: Path) -> None:
    """A 3-D observation without an encoder (not visual, or a snapshot built without one), a 2-D one or a scalar."""
    spec = BehaviorSpec((ObservationSpec((3,)), ObservationSpec(shape)), ActionSpec.create_discrete((2,)))
    snap = random_snapshot("Visual", spec)
    with pytest.raises(ExportError, match=r"observation 1 has shape .*; supported are vector observations"):
        export_onnx(snap, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [8, 22])
def test_unsupported_opsets_are_refused(opset: int, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset"):
        export_onnx(make_snapshot("discrete"), tmp_path / "m.onnx", opset=opset)


def test_inconsistent_snapshots_are_refused(tmp_path: Path) -> None:
    cont = make_snapshot("continuous")
    disc = make_snapshot("discrete")
    bad = {
        "no continuous head": dataclasses.replace(cont, continuous_head=None),
        "no log_std": dataclasses.replace(cont, log_std=None),
        "extra discrete head": dataclasses.replace(cont, discrete_head=disc.discrete_head),
        "wrong head width": dataclasses.replace(
            disc, discrete_head=Dense(readonly(np.ones((16, 4))), readonly(np.ones(4)))
        ),
        "wrong input width": dataclasses.replace(cont, hidden=disc.hidden),
        "NaN weight": dataclasses.replace(cont, log_std=readonly([np.nan, 0.0])),
        "normaliser shape": dataclasses.replace(cont, obs_mean=readonly(np.zeros(3)), obs_std=readonly(np.ones(3))),
    }
    for what, snap in bad.items():
        with pytest.raises(ExportError, match="Cannot export behavior"):
            export_onnx(snap, tmp_path / "m.onnx")
            pytest.fail(what)
    assert list(tmp_path.iterdir()) == []


def test_writes_atomically_and_replaces_an_older_model(tmp_path: Path) -> None:
    target = tmp_path / "results" / "run" / "Hybrid" / "Hybrid-100.onnx"  # parents are created
    first = make_snapshot("hybrid")
    export_onnx(first, target)
    second = dataclasses.replace(first, version=9)
    export_onnx(second, target)
    assert [p.name for p in target.parent.iterdir()] == ["Hybrid-100.onnx"]  # no temporaries left
    props = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert props["policy_version"] == "9" and props["behavior_name"] == "Hybrid"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old model")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ExportError, match="Could not write the ONNX model"):
        export_onnx(make_snapshot("discrete"), target)
    monkeypatch.undo()
    assert target.read_bytes() == b"old model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_onnx_feed_checks_the_number_of_observations() -> None:
    snap = make_snapshot("hybrid")
    with pytest.raises(SpecError, match="has 2 observations, got 1"):
        onnx_feed(snap, make_obs(snap, 2, 0)[:1])
    feed = onnx_feed(snap, make_obs(snap, 5, 0))
    assert list(feed) == ["obs_0", "obs_1", "action_masks"]  # no recurrent_in without memory
    np.testing.assert_array_equal(feed["action_masks"], np.ones((5, 3), np.float32))


def test_importing_the_exporter_loads_neither_onnx_nor_tensorflow() -> None:
    code = (
        "import sys, asynctrainer.export.onnx\n"
        "bad = [m for m in ('onnx', 'onnxruntime', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_a_hallway_policy_has_the_interface_of_mlagents_hallway_model(tmp_path: Path) -> None:
    """ML-Agents' Hallway config (memory 128) on Hallway's spec: the inputs and constants of the model
    Unity ships for Hallway (obs_0 [batch,105], obs_1 [batch,3], action_masks [batch,5],
    recurrent_in [batch,1,128]; memory_size [128], version_number [3], one branch of 5; opset 9)."""
    pytest.importorskip("tensorflow")
    from asynctrainer.ppo.trainer import PPOTrainer
    from asynctrainer.settings import load_run_settings

    settings = load_run_settings(Path(__file__).parents[1] / "configs" / "hallway.yaml").behaviors["Hallway"]
    spec = BehaviorSpec((ObservationSpec((105,)), ObservationSpec((3,))), ActionSpec.create_discrete((5,)))
    trainer = PPOTrainer("Hallway", settings, seed=0)
    trainer.add_policy("Hallway", trainer.create_policy("Hallway", spec))
    path = export_onnx(trainer._make_snapshot(0), tmp_path / "Hallway.onnx")
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import] == [9]
    sess = session(path)

    def dims(value: Any) -> list[Any]:
        return list(value.shape)

    assert [(i.name, dims(i), i.type) for i in sess.get_inputs()] == [
        ("obs_0", ["batch", 105], "tensor(float)"),
        ("obs_1", ["batch", 3], "tensor(float)"),
        ("action_masks", ["batch", 5], "tensor(float)"),
        ("recurrent_in", ["batch", 1, 128], "tensor(float)"),
    ]
    assert [o.name for o in sess.get_outputs()] == [
        "version_number",
        "memory_size",
        "recurrent_out",
        "discrete_actions",
        "discrete_action_output_shape",
        "deterministic_discrete_actions",
    ]
    n = 4
    feed = {
        "obs_0": np.zeros((n, 105), np.float32),
        "obs_1": np.zeros((n, 3), np.float32),
        "action_masks": np.ones((n, 5), np.float32),
        "recurrent_in": np.zeros((n, 1, 128), np.float32),
    }
    out = run(sess, feed)
    np.testing.assert_array_equal(out["version_number"], [3.0])
    np.testing.assert_array_equal(out["memory_size"], [128.0])
    np.testing.assert_array_equal(out["discrete_action_output_shape"], [[5.0]])
    assert out["recurrent_out"].shape == (n, 1, 128)
    assert out["discrete_actions"].dtype == np.int64 and out["discrete_actions"].shape == (n, 1)
