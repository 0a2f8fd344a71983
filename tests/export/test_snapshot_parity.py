"""The numpy snapshot and the TF networks must be the same policy."""

from __future__ import annotations

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec


@pytest.mark.parametrize(
    "action_spec",
    [
        ActionSpec.create_discrete((3,)),
        ActionSpec.create_discrete((2, 4)),
        ActionSpec.create_continuous(2),
        ActionSpec(2, (3,)),
    ],
    ids=["discrete", "multi-discrete", "continuous", "hybrid"],
)
def test_numpy_log_probs_match_tensorflow(action_spec: ActionSpec) -> None:
    from asynctrainer.nn.networks import ActorCritic

    spec = BehaviorSpec((ObservationSpec((3,)), ObservationSpec((2,))), action_spec)
    net = ActorCritic(spec, hidden_units=16, num_layers=2, seed=3)
    snap = net.snapshot("b", 0, 0)
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=(64, 3)).astype(np.float32), rng.normal(size=(64, 2)).astype(np.float32)]
    mask = np.ones((64, action_spec.mask_size), np.float32)
    if action_spec.is_discrete():
        mask[:, 0] = 0.0
    out = snap.act(obs, mask if action_spec.is_discrete() else None, rng=rng)
    flat = np.concatenate(obs, axis=1)
    logp, ent = net.log_prob_entropy(flat, out.continuous_raw, out.discrete, mask)
    np.testing.assert_allclose(out.log_prob, logp.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.entropy, ent.numpy(), atol=1e-4)
    if action_spec.is_discrete():
        assert (out.discrete[:, 0] != 0).all(), "a masked action was sampled"


def test_masked_actions_are_never_sampled_nor_chosen_deterministically() -> None:
    from asynctrainer.testing.fakes import random_snapshot

    spec = BehaviorSpec((ObservationSpec((4,)),), ActionSpec.create_discrete((3, 2)))
    snap = random_snapshot("b", spec, hidden=16, seed=5)
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(2000, 4)).astype(np.float32) * 5
    mask = np.ones((2000, 5), np.float32)
    mask[:1000, 1] = 0.0
    mask[1000:, 2] = 0.0
    mask[:, 4] = 0.0
    for deterministic in (False, True):
        out = snap.act(obs, mask, rng=rng, deterministic=deterministic)
        assert (out.discrete[:1000, 0] != 1).all() and (out.discrete[1000:, 0] != 2).all()
        assert (out.discrete[:, 1] == 0).all()


def test_save_and_load_round_trip(tmp_path: object) -> None:
    from pathlib import Path

    from asynctrainer.runtime.snapshot import PolicySnapshot
    from asynctrainer.testing.fakes import random_snapshot

    spec = BehaviorSpec((ObservationSpec((4,)),), ActionSpec(2, (3, 2)))
    snap = random_snapshot("b", spec, version=3, hidden=8)
    path = Path(str(tmp_path)) / "b.npz"
    snap.save(path)
    back = PolicySnapshot.load(path)
    assert (back.behavior_name, back.version, back.behavior_spec) == ("b", 3, spec)
    assert back.weights().keys() == snap.weights().keys()
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    a = snap.act(obs, deterministic=True, rng=np.random.default_rng(0))
    b = back.act(obs, deterministic=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.discrete, b.discrete)
    np.testing.assert_array_equal(a.continuous, b.continuous)
