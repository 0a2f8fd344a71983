"""Generalised advantage estimation in numpy (Schulman et al. 2016, arXiv:1506.02438)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["gae", "gae_segments"]

F32 = npt.NDArray[np.float32]


def gae(rewards: F32, discounts: F32, values: F32, lambda_: float) -> tuple[F32, F32]:
    """Advantages and λ-returns of one trajectory.

    ``A_t = Σ_k (Π_{j<k} γ_{t+j} λ) δ_{t+k}`` with ``δ_t = r_t + γ_t V_{t+1} − V_t``.

    :param rewards: ``[T]`` reward after each step.
    :param discounts: ``[T]`` γ at each step; 0 where the episode truly terminated, so a
        terminal bootstraps nothing while a time-horizon cut or an interruption does.
    :param values: ``[T + 1]``: V of each step's observation, then of the observation after the last.
    :param lambda_: GAE's λ (ML-Agents' ``lambd``); λ=1 gives Monte-Carlo returns, λ=0 TD(0).
    :return: (advantages ``[T]``, returns ``[T]`` = advantages + values[:-1]).
    """
    t_len = rewards.shape[0]
    if values.shape[0] != t_len + 1 or discounts.shape[0] != t_len:
        raise ValueError(f"gae: rewards {rewards.shape}, discounts {discounts.shape}, values {values.shape}")
    deltas = rewards + discounts * values[1:] - values[:-1]
    adv = np.empty(t_len, np.float32)
    acc = 0.0
    for t in range(t_len - 1, -1, -1):
        acc = float(deltas[t]) + float(discounts[t]) * lambda_ * acc
        adv[t] = acc
    return adv, (adv + values[:-1]).astype(np.float32)


def gae_segments(
    rewards: F32,
    values: F32,
    bootstrap: F32,
    lengths: npt.NDArray[np.int64],
    terminated: npt.NDArray[np.bool_],
    gamma: float,
    lambda_: float,
) -> tuple[F32, F32]:
    """:func:`gae` over a whole buffer of trajectories laid end to end, without a Python loop per step.

    Trajectory ``i`` covers ``lengths[i]`` steps; it bootstraps from ``bootstrap[i]`` unless
    ``terminated[i]``. The recursion runs backwards over time for all trajectories at once,
    so the update thread spends ``max(lengths)`` numpy steps instead of one Python step per
    experience (it holds the GIL all that while).

    :param rewards: ``[n]`` rewards, ``n = lengths.sum()``.
    :param values: ``[n]`` V of each step's observation.
    :param bootstrap: ``[k]`` V of the observation after each trajectory's last step.
    :return: (advantages ``[n]``, returns ``[n]``).
    """
    n, k = rewards.shape[0], lengths.shape[0]
    if values.shape[0] != n or bootstrap.shape[0] != k or terminated.shape[0] != k or int(lengths.sum()) != n:
        raise ValueError(
            f"gae_segments: rewards {rewards.shape}, values {values.shape}, bootstrap {bootstrap.shape}, "
            f"lengths summing to {int(lengths.sum())}, terminated {terminated.shape}"
        )
    gamma32 = np.float32(gamma)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    next_values = np.empty(n, np.float32)
    next_values[:-1] = values[1:]
    next_values[ends - 1] = np.where(terminated, np.float32(0.0), bootstrap)
    deltas = rewards + gamma32 * next_values - values
    segment = np.repeat(np.arange(k), lengths)
    position = np.arange(n) - starts[segment]
    padded = np.zeros((k, int(lengths.max(initial=0))), np.float64)
    padded[segment, position] = deltas
    # Past a trajectory's end the padding is 0, so its recursion starts from 0 at its last step.
    decay = float(gamma32) * lambda_
    acc = np.zeros(k, np.float64)
    for t in range(padded.shape[1] - 1, -1, -1):
        acc = padded[:, t] + decay * acc
        padded[:, t] = acc
    adv = padded[segment, position].astype(np.float32)
    return adv, (adv + values).astype(np.float32)
