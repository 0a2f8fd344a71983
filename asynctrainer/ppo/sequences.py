"""Cutting a buffer of trajectories into the fixed-length sequences a recurrent network trains on.

As ML-Agents does: each trajectory is split from its start into chunks of ``sequence_length``,
so no sequence crosses two trajectories, and the last chunk is padded at its end (10 steps with
sequence length 3 give ``[0 1 2] [3 4 5] [6 7 8] [9 p p]``). Pads repeat the trajectory's last
step (an action mask stays a valid mask) and are marked invalid, so the losses skip them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["sequence_layout", "sequence_minibatches"]

I64 = npt.NDArray[np.int64]


def sequence_layout(lengths: Sequence[int], sequence_length: int) -> tuple[I64, npt.NDArray[np.float32]]:
    """The padded row layout of trajectories of ``lengths`` laid end to end.

    :returns: for each padded row, the index of the buffer row it copies, and whether it is
        real (1.0) or a pad (0.0). Row ``k · sequence_length`` starts sequence ``k``.
    """
    sources: list[I64] = []
    valid: list[npt.NDArray[np.float32]] = []
    start = 0
    for length in lengths:
        padded = -(-length // sequence_length) * sequence_length
        rows = np.arange(start, start + padded, dtype=np.int64)
        sources.append(np.minimum(rows, start + length - 1))
        valid.append((rows < start + length).astype(np.float32))
        start += length
    return np.concatenate(sources), np.concatenate(valid)


def sequence_minibatches(
    n_sequences: int, sequence_length: int, batch_size: int, epochs: int, rng: np.random.Generator
) -> I64:
    """Row indices ``[epochs · n_minibatches, rows]`` of whole sequences, shuffled each epoch.

    A minibatch holds ``batch_size // sequence_length`` sequences (at least one, at most all of
    them), so its rows are whole sequences, in order within each.
    """
    per_batch = min(max(batch_size // sequence_length, 1), n_sequences)
    n_batches = n_sequences // per_batch
    steps = np.arange(sequence_length, dtype=np.int64)
    batches = [
        (
            rng.permutation(n_sequences)[: n_batches * per_batch].reshape(n_batches, per_batch, 1) * sequence_length
            + steps
        ).reshape(n_batches, per_batch * sequence_length)
        for _ in range(epochs)
    ]
    return np.concatenate(batches)
