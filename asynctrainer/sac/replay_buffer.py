"""SAC's replay buffer: transitions in growable numpy arrays, newest kept on truncation.

ML-Agents keeps SAC's experience in an ``AgentBuffer`` that grows past ``buffer_size`` and is
cut back to ``int(0.8 * buffer_size)`` newest experiences after an update
(``BUFFER_TRUNCATE_PERCENT``); minibatches are drawn uniformly with replacement. This buffer
does the same with one contiguous array per field, so a checkpoint can save it as ``.npz``.

With memory, each trajectory is stored cut into sequences of ``sequence_length`` from its
start, the last padded at its end with rows of ``valid`` 0 (as PPO's sequences are), so every
sequence starts at a multiple of the length; minibatches are whole sequences
(:meth:`ReplayBuffer.sample_sequences`) and truncation keeps whole sequences. ``memories`` is
the actor's memory each action was chosen with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from asynctrainer.runtime.trajectory import Trajectory

__all__ = ["FIELDS", "ReplayBuffer", "Transitions", "transitions_from_trajectory"]

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]


class Transitions(NamedTuple):
    """``N`` transitions, one row each.

    ``terminated`` is 1 only where the episode truly ended: a time-horizon cut or an
    interruption (truncation) keeps 0, so the learner bootstraps from ``next_obs``.
    ``rewards`` are the env's rewards, unscaled (ML-Agents recomputes the extrinsic
    signal, ``strength · r``, when it samples). ``masks``/``next_masks`` are 1 = allowed.
    """

    obs: F32
    next_obs: F32
    actions_continuous: F32
    actions_discrete: I32
    rewards: F32
    terminated: F32
    masks: F32
    next_masks: F32
    #: The actor's memory at each step, ``[N, memory_size]`` (``[N, 0]`` without memory).
    memories: F32
    #: 1 for a real step, 0 for a row padding a sequence.
    valid: F32


#: Field names, in order; also the suffixes of the checkpoint keys ``replay/<field>``.
FIELDS: tuple[str, ...] = Transitions._fields


def transitions_from_trajectory(
    trajectory: Trajectory, mask_size: int, memory_size: int = 0, sequence_length: int = 0
) -> Transitions:
    """Turn one trajectory into transitions ``obs[t] → obs[t+1]`` (``next_obs`` after the last).

    The mask after the last step is not part of a trajectory; the last step's own mask
    stands in for it (it only matters when the cut bootstraps, and masks rarely change
    from one step to the next). With ``sequence_length``, rows of ``valid`` 0 pad the
    transitions to a whole number of sequences (copies of the last row, as ML-Agents pads masks).
    """
    n = len(trajectory)
    obs = np.asarray(trajectory.obs, np.float32).reshape(n, -1)
    next_obs = np.concatenate([obs[1:], np.asarray(trajectory.next_obs, np.float32).reshape(1, -1)])
    terminated = np.zeros(n, np.float32)
    if trajectory.terminated and n:
        terminated[-1] = 1.0
    if trajectory.action_masks is None:
        masks = np.ones((n, mask_size), np.float32)
    else:
        masks = np.asarray(trajectory.action_masks, np.float32).reshape(n, mask_size)
    next_masks = np.concatenate([masks[1:], masks[-1:]]) if n else masks
    memories = (
        np.asarray(trajectory.memories, np.float32).reshape(n, memory_size)
        if memory_size and trajectory.memories is not None
        else np.zeros((n, memory_size), np.float32)
    )
    out = Transitions(
        obs=obs,
        next_obs=next_obs,
        actions_continuous=np.asarray(trajectory.actions_continuous, np.float32).reshape(n, -1),
        actions_discrete=np.asarray(trajectory.actions_discrete, np.int32).reshape(n, -1),
        rewards=np.asarray(trajectory.extrinsic_rewards, np.float32).reshape(n),
        terminated=terminated,
        masks=masks,
        next_masks=next_masks,
        memories=memories,
        valid=np.ones(n, np.float32),
    )
    pad = (-n) % sequence_length if sequence_length and n else 0
    if not pad:
        return out
    padded = [np.concatenate([field, np.repeat(field[-1:], pad, axis=0)]) for field in out]
    result = Transitions(*padded)
    result.valid[n:] = 0.0
    result.rewards[n:] = 0.0
    result.terminated[n:] = 0.0
    return result


class ReplayBuffer:
    """Transitions of one behavior; owned by the update thread.

    :param obs_size: flattened observation size.
    :param continuous_size: continuous action size (0 for none).
    :param num_branches: number of discrete branches (0 for none).
    :param mask_size: sum of the discrete branch sizes (0 for none).
    """

    def __init__(
        self,
        obs_size: int,
        continuous_size: int,
        num_branches: int,
        mask_size: int,
        memory_size: int = 0,
        sequence_length: int = 0,
    ) -> None:
        self.sequence_length = sequence_length
        self._shapes: dict[str, tuple[tuple[int, ...], type[np.generic]]] = {
            "obs": ((obs_size,), np.float32),
            "next_obs": ((obs_size,), np.float32),
            "actions_continuous": ((continuous_size,), np.float32),
            "actions_discrete": ((num_branches,), np.int32),
            "rewards": ((), np.float32),
            "terminated": ((), np.float32),
            "masks": ((mask_size,), np.float32),
            "next_masks": ((mask_size,), np.float32),
            "memories": ((memory_size,), np.float32),
            "valid": ((), np.float32),
        }
        self._size = 0
        self._data: dict[str, np.ndarray] = {k: self._empty(k, 0) for k in FIELDS}

    def _empty(self, field: str, rows: int) -> np.ndarray:
        shape, dtype = self._shapes[field]
        return np.zeros((rows, *shape), dtype)

    def __len__(self) -> int:
        return self._size

    def _reserve(self, rows: int) -> None:
        capacity = next(iter(self._data.values())).shape[0]
        if rows <= capacity:
            return
        new_capacity = max(rows, 2 * capacity, 256)
        for field, old in self._data.items():
            grown = self._empty(field, new_capacity)
            grown[: self._size] = old[: self._size]
            self._data[field] = grown

    def add(self, transitions: Transitions) -> None:
        """Append ``N`` transitions (checked against the buffer's shapes)."""
        n = int(transitions.rewards.shape[0])
        for field, array in zip(FIELDS, transitions, strict=True):
            shape, _ = self._shapes[field]
            if tuple(array.shape) != (n, *shape):
                raise ValueError(f"replay field '{field}': expected shape {(n, *shape)}, got {tuple(array.shape)}")
        self._reserve(self._size + n)
        for field, array in zip(FIELDS, transitions, strict=True):
            self._data[field][self._size : self._size + n] = array
        self._size += n

    def truncate(self, keep: int) -> None:
        """Keep only the newest ``keep`` transitions (ML-Agents' ``AgentBuffer.truncate``); with sequences,
        ``keep`` rounded down to whole sequences."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        if self.sequence_length:
            keep -= keep % self.sequence_length
        if self._size <= keep:
            return
        start = self._size - keep
        for array in self._data.values():
            array[:keep] = array[start : self._size].copy()
        self._size = keep

    def sample_indices(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> I32:
        """``[num_batches, batch_size]`` row indices drawn uniformly with replacement."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return rng.integers(0, self._size, size=(num_batches, batch_size)).astype(np.int32)

    def sample_sequences(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> I32:
        """``[num_batches, rows]`` row indices of ``batch_size // sequence_length`` (at least one) whole
        sequences each, drawn uniformly with replacement; ``rows`` is a multiple of the length."""
        seq = self.sequence_length
        sequences = self._size // seq
        if sequences == 0:
            raise ValueError("cannot sample a sequence from a replay buffer without one")
        starts = rng.integers(0, sequences, size=(num_batches, max(1, batch_size // seq))) * seq
        return (starts[:, :, None] + np.arange(seq)).reshape(num_batches, -1).astype(np.int32)

    def gather(self, indices: npt.NDArray[np.integer]) -> Transitions:
        """The transitions at ``indices`` (any shape), each field shaped ``[*indices.shape, ...]``."""
        return Transitions(*(self._data[field][indices] for field in FIELDS))

    def arrays(self, extra: Sequence[Transitions] = ()) -> dict[str, np.ndarray]:
        """Copies of the stored rows per field, with ``extra`` transitions appended."""
        out = {}
        for i, field in enumerate(FIELDS):
            parts = [self._data[field][: self._size], *(t[i] for t in extra)]
            out[field] = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        return out

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the contents with :meth:`arrays`' output (e.g. from a checkpoint)."""
        missing = [f for f in FIELDS if f not in arrays]
        if missing:
            raise ValueError(f"replay arrays lack the fields {missing}")
        n = int(arrays["rewards"].shape[0])
        self._size = 0
        self._data = {k: self._empty(k, 0) for k in FIELDS}
        self.add(Transitions(*(np.asarray(arrays[f], self._shapes[f][1]) for f in FIELDS)))
        assert self._size == n
