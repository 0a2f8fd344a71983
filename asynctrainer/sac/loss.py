"""SAC's losses as pure functions of tensors (Haarnoja et al. 2018, arXiv:1812.05905).

Nothing here reads settings, networks or optimizers. Shapes: ``B`` is the batch, ``M`` the
sum of the discrete branch sizes, ``K`` the number of entropy components: one for the
continuous part (if any), then one per discrete branch, each with its own temperature
``α_k = exp(log α_k)``, as ML-Agents' ``_log_ent_coef`` (``continuous``, ``discrete``).

A multi-discrete (and hybrid) Q is ML-Agents' factorisation: the critic outputs one value
per discrete action, ``Q_b(s, a_c, ·)`` for each branch ``b``, and the value of a joint
action is the mean over branches of the chosen actions' values
(``TorchSACOptimizer._condense_q_streams``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.nn.tf_setup import tf

__all__ = [
    "entropy_coef_loss",
    "expected_branch_value",
    "policy_loss",
    "q_loss",
    "soft_value",
    "taken_branch_value",
    "target_entropy",
    "td_target",
]

Tensor = Any

#: ML-Agents' ``TorchSACOptimizer``: ``discrete_target_entropy_scale = 0.2`` ("roughly equal
#: to e-greedy 0.05") and ``continuous_target_entropy_scale = 1.0``; the targets are
#: ``-1.0 · continuous_size`` and ``0.2 · log(branch_size)`` per branch (sac/optimizer_torch.py).
DISCRETE_TARGET_ENTROPY_SCALE = 0.2
CONTINUOUS_TARGET_ENTROPY_SCALE = 1.0


def _rank(t: Tensor, rank: int, name: str) -> None:
    if t.shape.rank != rank:
        raise ValueError(f"{name}: expected a rank-{rank} tensor, got shape {t.shape}")


def target_entropy(continuous_size: int, discrete_branches: Sequence[int]) -> npt.NDArray[np.float32]:
    """ML-Agents' target entropies ``[K]``: ``−1.0·|A_c|``, then ``0.2·log(n_b)`` per branch."""
    out: list[float] = []
    if continuous_size > 0:
        out.append(-CONTINUOUS_TARGET_ENTROPY_SCALE * float(continuous_size))
    out += [DISCRETE_TARGET_ENTROPY_SCALE * float(np.log(n)) for n in discrete_branches]
    return np.array(out, np.float32)


def td_target(rewards: Tensor, terminated: Tensor, next_value: Tensor, gamma: Tensor) -> Tensor:
    """``y = r + γ (1 − d) V(s')``, ``[B]``; ``d`` is 1 only at a true terminal."""
    _rank(rewards, 1, "rewards")
    _rank(terminated, 1, "terminated")
    _rank(next_value, 1, "next_value")
    return rewards + gamma * (1.0 - terminated) * next_value


def q_loss(q: Tensor, target: Tensor) -> Tensor:
    """``½ E[(Q(s, a) − y)²]`` for one critic (ML-Agents' ``0.5 * mse``); ``target`` is held fixed."""
    _rank(q, 1, "q")
    _rank(target, 1, "target")
    return 0.5 * tf().reduce_mean(tf().square(q - tf().stop_gradient(target)))


def taken_branch_value(values: Tensor, actions: Tensor, branches: Sequence[int]) -> Tensor:
    """``[B]`` value of the taken actions: ``values[:, 0]`` with no branches, else the mean
    over branches of ``values[:, offset_b + a_b]``.

    :param values: ``[B, M]`` (or ``[B, 1]`` without discrete branches).
    :param actions: ``[B, len(branches)]`` int32 branch indices.
    """
    t = tf()
    _rank(values, 2, "values")
    if not branches:
        return values[:, 0]
    _rank(actions, 2, "actions")
    picked = []
    start = 0
    for b, size in enumerate(branches):
        picked.append(t.gather(values[:, start : start + size], actions[:, b], axis=1, batch_dims=1))
        start += size
    return t.reduce_mean(t.stack(picked, axis=1), axis=1)


def expected_branch_value(probs: Tensor, values: Tensor, branches: Sequence[int]) -> Tensor:
    """``[B]`` ``E_π[Q]`` under a factorised policy: mean over branches of ``Σ_a π_b(a) Q_b(a)``;
    ``values[:, 0]`` with no branches.

    :param probs: ``[B, M]`` per-branch action probabilities (0 where masked).
    :param values: ``[B, M]`` (or ``[B, 1]`` without discrete branches).
    """
    t = tf()
    _rank(values, 2, "values")
    if not branches:
        return values[:, 0]
    _rank(probs, 2, "probs")
    sums = []
    start = 0
    for size in branches:
        sums.append(t.reduce_sum(probs[:, start : start + size] * values[:, start : start + size], axis=1))
        start += size
    return t.reduce_mean(t.stack(sums, axis=1), axis=1)


def soft_value(expected_q: Tensor, log_prob_terms: Tensor, alpha: Tensor) -> Tensor:
    """``V(s) = E_π[Q(s, a)] − Σ_k α_k E_π[log π_k]``, ``[B]``.

    :param expected_q: ``[B]``.
    :param log_prob_terms: ``[B, K]``: the continuous sample's (tanh-corrected) log-probability,
        then ``Σ_a π_b(a) log π_b(a)`` per branch.
    :param alpha: ``[K]`` temperatures.
    """
    _rank(expected_q, 1, "expected_q")
    _rank(log_prob_terms, 2, "log_prob_terms")
    return expected_q - tf().reduce_sum(log_prob_terms * alpha, axis=1)


def policy_loss(expected_q: Tensor, log_prob_terms: Tensor, alpha: Tensor) -> Tensor:
    """``E[Σ_k α_k log π_k − E_π[Q]]`` = ``−E[V(s)]``: the actor maximises the soft value.

    ``alpha`` is held fixed (its own loss is :func:`entropy_coef_loss`); shapes as :func:`soft_value`.
    """
    return -tf().reduce_mean(soft_value(expected_q, log_prob_terms, tf().stop_gradient(alpha)))


def entropy_coef_loss(log_alpha: Tensor, log_prob_terms: Tensor, target: Tensor) -> Tensor:
    """``−E[Σ_k log α_k · (log π_k + H̄_k)]``, the temperature loss ML-Agents writes with
    ``log α`` (``sac_entropy_loss``): α grows while the entropy is below its target ``H̄``.

    :param log_alpha: ``[K]``. :param log_prob_terms: ``[B, K]`` (held fixed). :param target: ``[K]``.
    """
    _rank(log_alpha, 1, "log_alpha")
    _rank(log_prob_terms, 2, "log_prob_terms")
    diff = tf().stop_gradient(log_prob_terms + target)
    return -tf().reduce_mean(tf().reduce_sum(log_alpha * diff, axis=1))
