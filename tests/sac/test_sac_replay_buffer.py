"""SAC's replay buffer: transitions from trajectories, ML-Agents' truncation, sampling shapes."""

from __future__ import annotations

import numpy as np
import pytest

from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.sac.replay_buffer import FIELDS, ReplayBuffer, Transitions, transitions_from_trajectory


def make_trajectory(n: int, *, terminated: bool = False, interrupted: bool = False, masked: bool = True) -> Trajectory:
    obs = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return Trajectory(
        behavior_name="b",
        agent_id="a",
        obs=obs,
        next_obs=np.array([100.0, 101.0], np.float32),
        actions_continuous=np.full((n, 1), 0.5, np.float32),
        actions_discrete=np.ones((n, 2), np.int32),
        log_probs=np.zeros(n, np.float32),
        entropies=np.zeros(n, np.float32),
        rewards=np.arange(n, dtype=np.float32),
        action_masks=np.tile(np.array([1, 0, 1, 1, 1], np.float32), (n, 1)) if masked else None,
        policy_versions=np.zeros(n, np.int64),
        terminated=terminated,
        interrupted=interrupted,
    )


def rows(n: int, start: float = 0.0) -> Transitions:
    base = start + np.arange(n, dtype=np.float32)
    return Transitions(
        obs=np.stack([base, base], axis=1),
        next_obs=np.stack([base + 1, base + 1], axis=1),
        actions_continuous=base[:, None],
        actions_discrete=np.stack([base, base], axis=1).astype(np.int32),
        rewards=base,
        terminated=np.zeros(n, np.float32),
        masks=np.ones((n, 5), np.float32),
        next_masks=np.ones((n, 5), np.float32),
        memories=np.zeros((n, 0), np.float32),
        valid=np.ones(n, np.float32),
    )


def test_transitions_chain_observations_and_end_with_next_obs() -> None:
    t = transitions_from_trajectory(make_trajectory(3, terminated=True), mask_size=5)
    np.testing.assert_array_equal(t.next_obs[:2], t.obs[1:])
    np.testing.assert_array_equal(t.next_obs[2], [100.0, 101.0])
    np.testing.assert_array_equal(t.terminated, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(t.masks[:, 1], 0.0)
    np.testing.assert_array_equal(t.next_masks, t.masks)


@pytest.mark.parametrize("cut", ["interrupted", "time_horizon"])
def test_interruptions_and_horizon_cuts_are_not_terminal_so_they_bootstrap(cut: str) -> None:
    t = transitions_from_trajectory(make_trajectory(4, interrupted=cut == "interrupted"), mask_size=5)
    np.testing.assert_array_equal(t.terminated, np.zeros(4))


def test_missing_masks_mean_everything_allowed() -> None:
    t = transitions_from_trajectory(make_trajectory(2, masked=False), mask_size=5)
    np.testing.assert_array_equal(t.masks, np.ones((2, 5)))
    np.testing.assert_array_equal(t.next_masks, np.ones((2, 5)))


def test_add_grows_and_truncate_keeps_the_newest_rows() -> None:
    buffer = ReplayBuffer(obs_size=2, continuous_size=1, num_branches=2, mask_size=5)
    for k in range(5):
        buffer.add(rows(100, start=100 * k))
    assert len(buffer) == 500
    buffer.truncate(int(0.8 * 300))
    assert len(buffer) == 240
    kept = buffer.arrays()
    np.testing.assert_array_equal(kept["rewards"], np.arange(260, 500, dtype=np.float32))
    np.testing.assert_array_equal(kept["obs"][:, 0], np.arange(260, 500, dtype=np.float32))
    buffer.add(rows(10, start=1000))
    assert len(buffer) == 250
    assert buffer.arrays()["rewards"][-1] == 1009.0
    buffer.truncate(1000)
    assert len(buffer) == 250


def test_sampling_gives_index_batches_and_gathered_fields_of_matching_shapes() -> None:
    buffer = ReplayBuffer(obs_size=2, continuous_size=1, num_branches=2, mask_size=5)
    buffer.add(rows(50))
    idx = buffer.sample_indices(np.random.default_rng(0), 7, 8)
    assert idx.shape == (7, 8) and idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() < 50
    batch = buffer.gather(idx)
    assert batch.obs.shape == (7, 8, 2) and batch.next_obs.shape == (7, 8, 2)
    assert batch.actions_continuous.shape == (7, 8, 1)
    assert batch.actions_discrete.shape == (7, 8, 2) and batch.actions_discrete.dtype == np.int32
    assert batch.rewards.shape == (7, 8) and batch.terminated.shape == (7, 8)
    assert batch.masks.shape == (7, 8, 5) and batch.next_masks.shape == (7, 8, 5)
    np.testing.assert_array_equal(batch.rewards, idx.astype(np.float32))


def test_sampling_is_repeatable_with_the_same_generator_state() -> None:
    buffer = ReplayBuffer(obs_size=2, continuous_size=1, num_branches=2, mask_size=5)
    buffer.add(rows(50))
    a = buffer.sample_indices(np.random.default_rng(3), 4, 8)
    b = buffer.sample_indices(np.random.default_rng(3), 4, 8)
    np.testing.assert_array_equal(a, b)


def test_empty_buffer_refuses_to_sample_and_bad_shapes_are_refused() -> None:
    buffer = ReplayBuffer(obs_size=2, continuous_size=1, num_branches=2, mask_size=5)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample_indices(np.random.default_rng(0), 1, 8)
    bad = rows(3)._replace(obs=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="obs"):
        buffer.add(bad)


def test_arrays_round_trip_with_queued_extra_transitions() -> None:
    buffer = ReplayBuffer(obs_size=2, continuous_size=1, num_branches=2, mask_size=5)
    buffer.add(rows(20))
    saved = buffer.arrays([rows(5, start=20)])
    assert set(saved) == set(FIELDS)
    other = ReplayBuffer(obs_size=2, continuous_size=1, num_branches=2, mask_size=5)
    other.load_arrays(saved)
    assert len(other) == 25
    for field in FIELDS:
        np.testing.assert_array_equal(other.arrays()[field], saved[field])
