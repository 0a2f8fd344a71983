"""The losses and rewards of the learned reward signals, as pure functions of tensors.

Curiosity (Pathak et al. 2017, arXiv:1705.05363) and random network distillation (Burda et al.
2018, arXiv:1810.12894) with ML-Agents' constants. Inputs are ``[B, ...]`` tensors; nothing here
reads settings, networks or optimizers.
"""

from __future__ import annotations

from typing import Any

from asynctrainer.nn.tf_setup import tf

__all__ = [
    "CURIOSITY_FORWARD_WEIGHT",
    "CURIOSITY_LOSS_SCALE",
    "curiosity_forward_error",
    "curiosity_inverse_loss",
    "curiosity_loss",
    "prediction_error",
]

Tensor = Any

#: Curiosity's loss is ``10 · (0.2 L_forward + 0.8 L_inverse)``.
CURIOSITY_LOSS_SCALE = 10.0
CURIOSITY_FORWARD_WEIGHT = 0.2
#: Added to a predicted probability before its log.
LOG_EPSILON = 1e-10


def curiosity_forward_error(next_encoding: Tensor, predicted: Tensor) -> Tensor:
    """``f = ½ Σ_j (φ(s')_j − ŝ'_j)²`` per sample, ``[B]``: the intrinsic reward before scaling and its forward loss."""
    return 0.5 * tf().reduce_sum(tf().square(next_encoding - predicted), axis=1)


def curiosity_inverse_loss(
    continuous: Tensor, predicted_continuous: Tensor, discrete_onehot: Tensor, predicted_probs: Tensor
) -> Tensor:
    """``mean Σ (a − â)² + mean Σ −onehot · log(p + 1e-10)`` over the continuous and the discrete actions.

    ``discrete_onehot`` and ``predicted_probs`` hold all branches side by side, ``[B, Σ branches]``
    (each branch's probabilities sum to 1); an action part that is absent has width 0 and adds 0.
    """
    t = tf()
    squared = t.reduce_sum(t.square(continuous - predicted_continuous), axis=1)
    cross_entropy = t.reduce_sum(-discrete_onehot * t.math.log(predicted_probs + LOG_EPSILON), axis=1)
    return t.reduce_mean(squared) + t.reduce_mean(cross_entropy)


def curiosity_loss(forward_loss: Tensor, inverse_loss: Tensor) -> Tensor:
    """``10 · (0.2 L_forward + 0.8 L_inverse)``."""
    w = CURIOSITY_FORWARD_WEIGHT
    return CURIOSITY_LOSS_SCALE * (w * forward_loss + (1.0 - w) * inverse_loss)


def prediction_error(predicted: Tensor, target: Tensor) -> Tensor:
    """RND's ``Σ_j (f̂(s)_j − f(s)_j)²`` per sample, ``[B]``: its reward and, averaged, its loss."""
    return tf().reduce_sum(tf().square(predicted - target), axis=1)
