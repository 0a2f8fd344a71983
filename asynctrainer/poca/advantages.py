"""POCA's counterfactual advantages, a pure function of arrays (Cohen et al. 2021, arXiv:2111.05992)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from asynctrainer.ppo.gae import gae_segments

__all__ = ["counterfactual_advantages"]

F32 = npt.NDArray[np.float32]


def counterfactual_advantages(
    rewards: F32,
    values: F32,
    baselines: F32,
    bootstrap: F32,
    lengths: npt.NDArray[np.int64],
    done: npt.NDArray[np.bool_],
    gamma: float,
    lambda_: float,
) -> tuple[F32, F32]:
    """One reward stream's advantages and returns over a buffer of trajectories laid end to end.

    The returns are λ-returns of the centralised value ``V``:
    ``G_{T−1} = r_{T−1} + γ V_next`` (``V_next`` = 0 when ``done``: the agent's whole group
    ended, not interrupted) and ``G_t = r_t + γ [(1 − λ) V_{t+1} + λ G_{t+1}]``, which is GAE's
    advantage plus ``V`` (:func:`~asynctrainer.ppo.gae.gae_segments`). The advantage of agent
    ``i``'s action is ``A_t = G_t − b_t``, ``b`` being its counterfactual baseline (the group's
    value with every action but ``i``'s).

    :param values: ``[n]`` ``V`` at each step; ``baselines``: ``[n]`` ``b`` at each step.
    :param bootstrap: ``[k]`` ``V`` after each trajectory's last step.
    :return: (advantages ``[n]``, returns ``[n]``); both the value and the baseline regress to the returns.
    """
    if baselines.shape != values.shape:
        raise ValueError(f"counterfactual_advantages: baselines {baselines.shape} and values {values.shape} differ")
    _, returns = gae_segments(rewards, values, bootstrap, lengths, done, gamma, lambda_)
    return (returns - baselines).astype(np.float32), returns
