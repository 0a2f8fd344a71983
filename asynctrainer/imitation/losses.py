"""Behavioral cloning's loss as a pure function of tensors (ML-Agents' form)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asynctrainer.nn.tf_setup import tf

__all__ = ["BC_LOG_EPSILON", "bc_loss"]

Tensor = Any
#: Added to a probability before its log.
BC_LOG_EPSILON = 1e-7


def bc_loss(
    sampled_continuous: Tensor | None,
    expert_continuous: Tensor,
    logits: Tensor | None,
    expert_onehot: Tensor,
    branches: Sequence[int],
) -> Tensor:
    """The cloning loss of a batch: continuous plus discrete part, each present only for its actions.

    - continuous: ``mean (â − a)²`` over every element, ``â = μ + σ·ε`` the policy's sampled action;
    - discrete: per branch ``mean Σ −onehot · log_softmax(log(p + 1e-7))`` with ``p`` the
      branch's softmax, then the mean over branches.
    """
    t = tf()
    total = t.constant(0.0)
    if sampled_continuous is not None:
        total += t.reduce_mean(t.square(sampled_continuous - expert_continuous))
    if logits is not None and branches:
        parts, start = [], 0
        for size in branches:
            probs = t.nn.softmax(logits[:, start : start + size], axis=1)
            log_probs = t.nn.log_softmax(t.math.log(probs + BC_LOG_EPSILON), axis=1)
            onehot = expert_onehot[:, start : start + size]
            parts.append(t.reduce_mean(t.reduce_sum(-onehot * log_probs, axis=1)))
            start += size
        total += t.add_n(parts) / float(len(parts))
    return total
