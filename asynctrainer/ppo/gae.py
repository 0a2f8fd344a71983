"""Generalised advantage estimation in numpy (Schulman et al. 2016, arXiv:1506.02438)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["gae"]

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
