"""SAC with memory: sequences in the replay buffer, the recurrent actor against its snapshot, a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.sac.replay_buffer import ReplayBuffer, transitions_from_trajectory

SPEC = BehaviorSpec((ObservationSpec((3,)),), ActionSpec(1, (2,)))
M, SEQ = 6, 4


def trajectory(n: int, start: float = 0.0, terminated: bool = True) -> Trajectory:
    steps = start + np.arange(n, dtype=np.float32)
    return Trajectory(
        behavior_name="b",
        agent_id="a",
        obs=np.repeat(steps[:, None], 3, axis=1),
        next_obs=np.full(3, start + n, np.float32),
        actions_continuous=steps[:, None],
        actions_discrete=np.zeros((n, 1), np.int32),
        log_probs=np.zeros(n, np.float32),
        entropies=np.zeros(n, np.float32),
        rewards=np.ones(n, np.float32),
        action_masks=None,
        policy_versions=np.zeros(n, np.int64),
        terminated=terminated,
        memories=np.repeat(steps[:, None], M, axis=1),
    )


def test_trajectories_are_stored_as_whole_padded_sequences() -> None:
    out = transitions_from_trajectory(trajectory(6), 2, M, SEQ)
    assert out.valid.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert out.rewards.tolist() == [1, 1, 1, 1, 1, 1, 0, 0] and out.terminated.tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    np.testing.assert_array_equal(out.memories[:6, 0], np.arange(6))
    buffer = ReplayBuffer(3, 1, 1, 2, M, SEQ)
    buffer.add(out)
    buffer.add(transitions_from_trajectory(trajectory(4, start=10.0), 2, M, SEQ))
    idx = buffer.sample_sequences(np.random.default_rng(0), 3, 9)  # 9 // 4 = 2 sequences per batch
    assert idx.shape == (3, 8) and (idx.reshape(3, 2, SEQ)[:, :, 0] % SEQ == 0).all()
    np.testing.assert_array_equal(np.diff(idx.reshape(3, 2, SEQ), axis=2), 1)
    buffer.truncate(7)  # rounded down to whole sequences: the newest one
    assert len(buffer) == 4 and buffer.gather(np.arange(4)).obs[:, 0].tolist() == [10, 11, 12, 13]


def test_the_recurrent_actor_follows_its_snapshot_over_a_sequence() -> None:
    pytest.importorskip("tensorflow")
    from asynctrainer.sac.networks import SACNetworks

    nets = SACNetworks(SPEC, hidden_units=8, num_layers=1, seed=2, init_entcoef=1.0, memory_size=M, sequence_length=SEQ)
    snap = nets.actor.snapshot("b", 0, 0)
    assert snap.memory_size == M
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(2 * SEQ, 3)).astype(np.float32)  # two sequences, agents 0 and 1
    start = rng.normal(size=(2, M)).astype(np.float32) * 0.1
    mean, _ = nets.actor.heads_of(obs, start)
    memory = start
    expected = np.zeros((2, SEQ, 1), np.float32)
    for k in range(SEQ):
        step = snap.act(obs.reshape(2, SEQ, 3)[:, k], deterministic=True, rng=rng, memories=memory)
        expected[:, k] = np.arctanh(np.clip(step.continuous, -0.999999, 0.999999))
        memory = step.memories
    np.testing.assert_allclose(mean.numpy().reshape(2, SEQ, 1), expected, atol=1e-4)
    after = nets.actor.after_first_step(obs, start).numpy()
    first = snap.act(obs.reshape(2, SEQ, 3)[:, 0], deterministic=True, rng=rng, memories=start)
    np.testing.assert_allclose(after, first.memories, atol=1e-5)
    assert any(k.startswith("q1_lstm/") for k in nets.named_variables())  # the critics have LSTMs too
