"""The losses and rewards of the learned reward signals, as pure functions of tensors.

Curiosity (Pathak et al. 2017, arXiv:1705.05363), random network distillation (Burda et al.
2018, arXiv:1810.12894) and GAIL (Ho & Ermon 2016, arXiv:1606.03476) with VAIL's bottleneck (Peng
et al. 2018, arXiv:1810.00821), with ML-Agents' constants. Inputs are ``[B, ...]`` tensors; nothing here
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
    "discriminator_loss",
    "gail_reward",
    "gradient_penalty",
    "prediction_error",
    "vail_kl",
]

Tensor = Any

#: Curiosity's loss is ``10 · (0.2 L_forward + 0.8 L_inverse)``.
CURIOSITY_LOSS_SCALE = 10.0
CURIOSITY_FORWARD_WEIGHT = 0.2
#: Added to a predicted probability before its log.
LOG_EPSILON = 1e-10
#: GAIL's epsilon inside logs and square roots.
GAIL_EPSILON = 1e-7


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


def discriminator_loss(expert_estimate: Tensor, policy_estimate: Tensor) -> Tensor:
    """GAIL's ``−mean[log(D_E + 1e-7) + log(1 − D_P + 1e-7)]`` (``D`` the probability of being the expert)."""
    t = tf()
    eps = GAIL_EPSILON
    return -t.reduce_mean(t.math.log(expert_estimate + eps) + t.math.log(1.0 - policy_estimate + eps))


def vail_kl(expert_mu: Tensor, policy_mu: Tensor, sigma: Tensor) -> Tensor:
    """VAIL's bottleneck KL: ``mean_i −Σ_j (1 + log σ_j² − ½μ_E,ij² − ½μ_P,ij² − σ_j²)``."""
    t = tf()
    var = t.square(sigma)
    terms = 1.0 + t.math.log(var + GAIL_EPSILON) - 0.5 * t.square(expert_mu) - 0.5 * t.square(policy_mu) - var
    return t.reduce_mean(-t.reduce_sum(terms, axis=1))


def gradient_penalty(gradient: Tensor) -> Tensor:
    """``mean((‖g‖ − 1)²)`` with ``‖g‖ = sqrt(Σ_j g_j² + 1e-7)`` per sample."""
    t = tf()
    norm = t.sqrt(t.reduce_sum(t.square(gradient), axis=1) + GAIL_EPSILON)
    return t.reduce_mean(t.square(norm - 1.0))


def gail_reward(policy_estimate: Tensor) -> Tensor:
    """``−log(1 − D · (1 − 1e-7))`` per sample, ``[B]``: large where ``D`` takes the policy for the expert."""
    return -tf().math.log(1.0 - policy_estimate * (1.0 - GAIL_EPSILON))
