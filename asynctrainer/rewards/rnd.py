"""Random network distillation (``reward_signals.rnd``), as ML-Agents builds it.

Two dense bodies of the signal's shape (swish), initialised independently: a frozen random
target ``f`` and a predictor ``f̂`` trained to match it. The reward of a step is the squared
error ``Σ (f̂(s) − f(s))²`` at its observation, as ML-Agents computes it (no ½, no
normalisation, no cap); the loss is its batch mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.nn.networks import mlp
from asynctrainer.nn.tf_setup import tf
from asynctrainer.rewards import losses
from asynctrainer.rewards.base import SelfSupervisedSignal
from asynctrainer.settings import RewardSignalSettings

__all__ = ["RNDSignal"]

Tensor = Any


class RNDSignal(SelfSupervisedSignal):
    key = "rnd"
    stat_name = "Rnd"
    ignore_done = True
    default_learning_rate = 1e-4  # ML-Agents' code (its docs say 3e-4)
    loss_names = ("Losses/RND Loss",)

    def __init__(self, spec: BehaviorSpec, settings: RewardSignalSettings, *, seed: int) -> None:
        super().__init__(spec, settings, seed=seed)
        tf()
        units, layers = self.network.hidden_units, self.network.num_layers
        self.target = mlp(units, layers, seed + 50, "rnd_target", activation="swish")
        self.predictor = mlp(units, layers, seed, "rnd_predictor", activation="swish")
        for layer in self.target:
            layer.trainable = False
        self._compile()

    def _layers(self) -> Sequence[Any]:
        return [*self.target, *self.predictor]

    def _trainable(self) -> list[Any]:
        return [v for layer in self.predictor for v in layer.trainable_weights]

    @staticmethod
    def _apply(layers: Sequence[Any], obs: Tensor) -> Tensor:
        h = obs
        for layer in layers:
            h = layer(h)
        return h

    def _error(self, obs: Tensor) -> Tensor:
        target = tf().stop_gradient(self._apply(self.target, obs))
        return losses.prediction_error(self._apply(self.predictor, obs), target)

    def _losses(self, obs: Tensor, next_obs: Tensor, continuous: Tensor, onehot: Tensor) -> list[Tensor]:
        loss = tf().reduce_mean(self._error(obs))
        return [loss, loss]

    def _raw_reward(self, obs: Tensor, next_obs: Tensor, continuous: Tensor, onehot: Tensor, done: Tensor) -> Tensor:
        return self._error(obs)
