"""Keras actor and critic networks, and the TF twin of the snapshot's distribution.

The actor is an MLP with tanh hidden layers and one head per action part: logits for all
discrete branches (split per branch, masked as ML-Agents does) and a Gaussian mean with a
state-independent log-std for continuous actions. The critic is a separate MLP. Hidden
activations, masks and clipping match :class:`~asynctrainer.policy.snapshot.PolicySnapshot`
exactly, so acting in numpy and learning in TF see one policy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.policy.snapshot import LOG_2PI, MASK_PENALTY, PolicySnapshot
from asynctrainer.policy.tf_setup import keras as tf_keras
from asynctrainer.policy.tf_setup import tf

__all__ = ["ActorCritic", "mlp", "snapshot_from_layers"]

Tensor = Any


def snapshot_from_layers(
    behavior_name: str,
    version: int,
    step: int,
    spec: BehaviorSpec,
    body: list[Any],
    discrete_head: Any,
    continuous_head: Any,
    log_std: np.ndarray | None,
    *,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
    tanh_squash: bool = False,
) -> PolicySnapshot:
    """Copy Keras dense layers (hidden body, optional heads) into a frozen :class:`PolicySnapshot`."""

    def pair(layer: Any) -> tuple[np.ndarray, np.ndarray] | None:
        return None if layer is None else (layer.kernel.numpy(), layer.bias.numpy())

    return PolicySnapshot.create(
        behavior_name,
        version,
        step,
        spec,
        hidden=[(layer.kernel.numpy(), layer.bias.numpy()) for layer in body],
        discrete_head=pair(discrete_head),
        continuous_head=pair(continuous_head),
        log_std=log_std,
        obs_mean=obs_mean,
        obs_std=obs_std,
        tanh_squash=tanh_squash,
    )


def mlp(units: int, layers: int, seed: int, name: str) -> list[Any]:
    keras = tf_keras()
    return [
        keras.layers.Dense(
            units,
            activation="tanh",
            kernel_initializer=keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed + i),
            name=f"{name}_{i}",
        )
        for i in range(layers)
    ]


class ActorCritic:
    """An actor and a critic for one behavior spec."""

    def __init__(self, spec: BehaviorSpec, *, hidden_units: int, num_layers: int, seed: int) -> None:
        keras = tf_keras()
        tf()
        self.spec = spec
        a = spec.action_spec
        self.actor_body = mlp(hidden_units, num_layers, seed, "actor")
        self.critic_body = mlp(hidden_units, num_layers, seed + 100, "critic")
        self.discrete_head = (
            keras.layers.Dense(
                a.mask_size,
                kernel_initializer=keras.initializers.Orthogonal(0.01, seed=seed + 200),
                name="discrete_head",
            )
            if a.is_discrete()
            else None
        )
        self.continuous_head = (
            keras.layers.Dense(
                a.continuous_size, kernel_initializer=keras.initializers.Orthogonal(0.2, seed=seed + 300)
            )
            if a.is_continuous()
            else None
        )
        self.log_std = (
            keras.Variable(np.zeros(a.continuous_size, np.float32), name="log_std") if a.is_continuous() else None
        )
        self.value_head = keras.layers.Dense(
            1, kernel_initializer=keras.initializers.Orthogonal(1.0, seed=seed + 400), name="value_head"
        )
        dummy = np.zeros((1, spec.observation_size), np.float32)
        self.features(dummy)
        self.value(dummy)

    # ----- forward ------------------------------------------------------------------------------

    def features(self, obs: Tensor) -> Tensor:
        h = obs
        for layer in self.actor_body:
            h = layer(h)
        if self.discrete_head is not None:
            self.discrete_head(h)
        if self.continuous_head is not None:
            self.continuous_head(h)
        return h

    def value(self, obs: Tensor) -> Tensor:
        h = obs
        for layer in self.critic_body:
            h = layer(h)
        return tf().squeeze(self.value_head(h), axis=-1)

    def log_prob_entropy(
        self, obs: Tensor, continuous: Tensor, discrete: Tensor, masks: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Log-probability (summed over action parts) and entropy of the given actions, ``[B]`` each."""
        t = tf()
        h = obs
        for layer in self.actor_body:
            h = layer(h)
        log_prob = t.zeros(t.shape(obs)[:1], t.float32)
        entropy = t.zeros(t.shape(obs)[:1], t.float32)
        if self.continuous_head is not None and self.log_std is not None:
            mean = self.continuous_head(h)
            log_std = t.convert_to_tensor(self.log_std)
            z = (continuous - mean) * t.exp(-log_std)
            log_prob += t.reduce_sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI, axis=1)
            entropy += t.reduce_sum(log_std + 0.5 * (1.0 + LOG_2PI))
        if self.discrete_head is not None:
            logits = self.discrete_head(h)
            logits = logits * masks - MASK_PENALTY * (1.0 - masks)
            start = 0
            for b, size in enumerate(self.spec.action_spec.discrete_branches):
                logp = t.nn.log_softmax(logits[:, start : start + size], axis=1)
                start += size
                log_prob += t.gather(logp, discrete[:, b], axis=1, batch_dims=1)
                probs = t.exp(logp)
                entropy -= t.reduce_sum(probs * logp, axis=1)
        return log_prob, entropy

    # ----- variables ----------------------------------------------------------------------------

    @property
    def actor_variables(self) -> list[Any]:
        out: list[Any] = []
        for layer in self.actor_body:
            out += layer.trainable_weights
        for head in (self.discrete_head, self.continuous_head):
            if head is not None:
                out += head.trainable_weights
        if self.log_std is not None:
            out.append(self.log_std)
        return out

    @property
    def critic_variables(self) -> list[Any]:
        out: list[Any] = []
        for layer in self.critic_body:
            out += layer.trainable_weights
        return out + self.value_head.trainable_weights

    @property
    def trainable_variables(self) -> list[Any]:
        return self.actor_variables + self.critic_variables

    def named_variables(self) -> dict[str, Any]:
        """Variables by a stable name (``actor_0/kernel``, ``value_head/bias``, ``log_std``)."""
        out: dict[str, Any] = {}
        for layer in [*self.actor_body, self.discrete_head, self.continuous_head, *self.critic_body, self.value_head]:
            if layer is not None:
                out[f"{layer.name}/kernel"] = layer.kernel
                out[f"{layer.name}/bias"] = layer.bias
        if self.log_std is not None:
            out["log_std"] = self.log_std
        return out

    def snapshot(
        self,
        behavior_name: str,
        version: int,
        step: int,
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
    ) -> PolicySnapshot:
        """Copy the actor into a frozen numpy :class:`PolicySnapshot` (call on the update thread)."""
        log_std = None if self.log_std is None else self.log_std.numpy()
        return snapshot_from_layers(
            behavior_name,
            version,
            step,
            self.spec,
            self.actor_body,
            self.discrete_head,
            self.continuous_head,
            log_std,
            obs_mean=obs_mean,
            obs_std=obs_std,
        )
