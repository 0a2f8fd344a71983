"""The intrinsic curiosity module (``reward_signals.curiosity``), as ML-Agents builds it.

An encoder φ (the signal's own dense body, swish) feeds two heads:

- the inverse model predicts the action from ``[φ(s), φ(s')]`` (Dense 256 swish, then a linear
  continuous head and a softmax per discrete branch);
- the forward model predicts ``φ(s')`` from ``[φ(s), a]`` (Dense 256 swish, then linear), ``a``
  being the continuous actions followed by one one-hot per branch.

The reward is the forward model's error ``f = ½‖φ(s') − ŝ'‖²``, capped so that
``strength · reward ≤ 1``, and 0 until the first update. Gradients reach φ through both
encodings (ML-Agents does not stop the gradient at the target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.nn.networks import mlp
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.rewards import losses
from asynctrainer.rewards.base import SelfSupervisedSignal
from asynctrainer.settings import RewardSignalSettings

__all__ = ["CuriositySignal"]

Tensor = Any
#: Width of the forward and inverse models' hidden layer.
MODEL_UNITS = 256


class CuriositySignal(SelfSupervisedSignal):
    key = "curiosity"
    stat_name = "Curiosity"
    ignore_done = True
    default_learning_rate = 3e-4
    loss_names = ("Losses/Curiosity Forward Loss", "Losses/Curiosity Inverse Loss")

    def __init__(self, spec: BehaviorSpec, settings: RewardSignalSettings, *, seed: int) -> None:
        super().__init__(spec, settings, seed=seed)
        keras = tf_keras()
        tf()
        a = spec.action_spec
        units = self.network.hidden_units
        self.encoder = mlp(units, self.network.num_layers, seed, "curiosity_encoder", activation="swish")
        dense = keras.layers.Dense
        glorot = keras.initializers.GlorotUniform
        self.inverse_hidden = dense(
            MODEL_UNITS, "swish", kernel_initializer=glorot(seed + 10), name="curiosity_inverse"
        )
        self.inverse_continuous = (
            dense(a.continuous_size, kernel_initializer=glorot(seed + 11), name="curiosity_inverse_continuous")
            if a.continuous_size
            else None
        )
        self.inverse_discrete = (
            dense(a.mask_size, kernel_initializer=glorot(seed + 12), name="curiosity_inverse_discrete")
            if a.mask_size
            else None
        )
        self.forward_hidden = dense(
            MODEL_UNITS, "swish", kernel_initializer=glorot(seed + 13), name="curiosity_forward"
        )
        self.forward_out = dense(units, kernel_initializer=glorot(seed + 14), name="curiosity_forward_out")
        self._compile()

    def _layers(self) -> Sequence[Any]:
        heads = [self.inverse_continuous, self.inverse_discrete]
        return [
            *self.encoder,
            self.inverse_hidden,
            *[h for h in heads if h is not None],
            self.forward_hidden,
            self.forward_out,
        ]

    def _encode(self, obs: Tensor) -> Tensor:
        h = obs
        for layer in self.encoder:
            h = layer(h)
        return h

    def _predict_next(self, obs: Tensor, continuous: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor]:
        """``φ(s)`` and the forward model's prediction of ``φ(s')``."""
        t = tf()
        encoded = self._encode(obs)
        return encoded, self.forward_out(self.forward_hidden(t.concat([encoded, continuous, onehot], axis=1)))

    def _predict_action(self, encoded: Tensor, next_encoded: Tensor) -> tuple[Tensor, Tensor]:
        """The inverse model's continuous action and per-branch probabilities."""
        t = tf()
        h = self.inverse_hidden(t.concat([encoded, next_encoded], axis=1))
        n = t.shape(encoded)[:1]
        continuous = (
            self.inverse_continuous(h) if self.inverse_continuous is not None else t.zeros(t.concat([n, [0]], 0))
        )
        if self.inverse_discrete is None:
            return continuous, t.zeros(t.concat([n, [0]], 0))
        logits = self.inverse_discrete(h)
        probs, start = [], 0
        for size in self.spec.action_spec.discrete_branches:
            probs.append(t.nn.softmax(logits[:, start : start + size], axis=1))
            start += size
        return continuous, t.concat(probs, axis=1)

    def _losses(self, obs: Tensor, next_obs: Tensor, continuous: Tensor, onehot: Tensor) -> list[Tensor]:
        t = tf()
        encoded, predicted = self._predict_next(obs, continuous, onehot)
        next_encoded = self._encode(next_obs)
        forward = t.reduce_mean(losses.curiosity_forward_error(next_encoded, predicted))
        guessed_continuous, guessed_probs = self._predict_action(encoded, next_encoded)
        inverse = losses.curiosity_inverse_loss(continuous, guessed_continuous, onehot, guessed_probs)
        return [losses.curiosity_loss(forward, inverse), forward, inverse]

    def _raw_reward(self, obs: Tensor, next_obs: Tensor, continuous: Tensor, onehot: Tensor, done: Tensor) -> Tensor:
        t = tf()
        _, predicted = self._predict_next(obs, continuous, onehot)
        error = losses.curiosity_forward_error(self._encode(next_obs), predicted)
        capped = t.minimum(error, 1.0 / max(self.strength, 1e-12))
        return capped * t.cast(self._updates > 0.0, t.float32)  # 0 until the first update
