"""PPO's losses as pure functions of tensors (Schulman et al. 2017, arXiv:1707.06347).

Each takes ``[B]`` tensors and scalars and returns a scalar; nothing here reads settings,
networks or optimizers.
"""

from __future__ import annotations

from typing import Any

from asynctrainer.nn.tf_setup import tf

__all__ = ["approx_kl", "clip_fraction", "clipped_surrogate_loss", "mean_value_loss", "value_loss"]

Tensor = Any


def _check(*tensors: Tensor) -> None:
    for t in tensors:
        if t.shape.rank != 1:
            raise ValueError(f"expected a rank-1 [B] tensor, got shape {t.shape}")


def clipped_surrogate_loss(log_prob: Tensor, behavior_log_prob: Tensor, advantage: Tensor, epsilon: Tensor) -> Tensor:
    """``−E[min(ρ A, clip(ρ, 1−ε, 1+ε) A)]`` with ``ρ = exp(log π(a|s) − log μ(a|s))``.

    ``behavior_log_prob`` is the log-probability under the snapshot that really acted, so
    the ratio stays correct while acting runs ahead of learning (by up to one update).
    """
    _check(log_prob, behavior_log_prob, advantage)
    ratio = tf().exp(log_prob - behavior_log_prob)
    clipped = tf().clip_by_value(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return -tf().reduce_mean(tf().minimum(ratio * advantage, clipped * advantage))


def value_loss(values: Tensor, returns: Tensor) -> Tensor:
    """``E[(R − V)²]``.

    ML-Agents clips the value change to ±ε per update; with returns in the tens (CartPole:
    up to 1/(1−γ) = 50) that throttles the critic, and on CartPole it cost about 20 % more
    steps to solve (benchmarks/time_to_solve.py), so the plain loss is used, as in SB3.
    """
    _check(values, returns)
    return tf().reduce_mean(tf().square(returns - values))


def mean_value_loss(values: Tensor, returns: Tensor, heads: int) -> Tensor:
    """``(1/K) Σ_k E[(R_k − V_k)²]`` over the ``K = heads`` columns of ``[B, K]`` values and returns."""
    return sum(value_loss(values[:, k], returns[:, k]) for k in range(heads)) / float(heads)


def approx_kl(log_prob: Tensor, behavior_log_prob: Tensor) -> Tensor:
    """``E[(ρ − 1) − log ρ]``, an unbiased, non-negative KL(μ‖π) estimate (J. Schulman, 2020 note)."""
    _check(log_prob, behavior_log_prob)
    log_ratio = log_prob - behavior_log_prob
    return tf().reduce_mean(tf().exp(log_ratio) - 1.0 - log_ratio)


def clip_fraction(log_prob: Tensor, behavior_log_prob: Tensor, epsilon: Tensor) -> Tensor:
    """Fraction of samples whose ratio left ``[1−ε, 1+ε]``."""
    _check(log_prob, behavior_log_prob)
    ratio = tf().exp(log_prob - behavior_log_prob)
    return tf().reduce_mean(tf().cast(tf().abs(ratio - 1.0) > epsilon, tf().float32))
