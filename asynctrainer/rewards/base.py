"""What the learned reward signals share: settings, an Adam of their own, the traced reward and update."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.nn.graph_loops import sum_over_range
from asynctrainer.nn.normalizer import Normalizer
from asynctrainer.nn.optim import adam_step
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.rewards.signals import SignalBatch, signal_network
from asynctrainer.runtime.scheduling import idle_while_computing
from asynctrainer.settings import RewardSignalSettings

__all__ = ["LearnedSignal", "SelfSupervisedSignal"]

F32 = npt.NDArray[np.float32]
Tensor = Any


class LearnedSignal(ABC):
    """A reward signal with networks of its own, trained by one Adam.

    A subclass builds its layers in ``__init__`` (before calling :meth:`_compile`) and defines
    :meth:`_layers`, :meth:`_raw_reward` and :meth:`_traced_train`.
    """

    key: str = ""
    stat_name: str = ""
    ignore_done: bool = True
    #: ML-Agents' default learning rate of this signal.
    default_learning_rate: float = 3e-4
    #: Stat names of the losses :meth:`_losses` returns after the total.
    loss_names: tuple[str, ...] = ()
    #: Whether the normaliser (with ``normalize``) learns from the observations evaluated.
    statistics_from_policy: bool = True

    def __init__(self, spec: BehaviorSpec, settings: RewardSignalSettings, *, seed: int) -> None:
        self.spec = spec
        self.gamma = float(settings.gamma)
        self.strength = float(settings.strength)
        self.network = signal_network(settings)
        self.learning_rate = float(settings.learning_rate or self.default_learning_rate)
        self.seed = seed
        self.obs_size = spec.observation_size
        self._optimizer = tf_keras().optimizers.Adam(learning_rate=self.learning_rate)
        self._updates = tf_keras().Variable(0.0, trainable=False, name=f"{self.key}_updates")
        self._train_fn: Any = None
        self._reward_fn: Any = None
        #: With the signal's ``network_settings.normalize``: running statistics of the
        #: observations it evaluates, applied to every observation its networks read.
        self.normalizer = Normalizer(self.obs_size) if self.network.normalize else None

    def _normalized(self, batch: SignalBatch, *, learn: bool = False) -> SignalBatch:
        """``batch`` with normalised observations (updating the statistics first with ``learn``)."""
        if self.normalizer is None:
            return batch
        if learn:
            self.normalizer.update(batch.obs)
        apply = self.normalizer.apply
        return SignalBatch(apply(batch.obs), apply(batch.next_obs), batch.continuous, batch.discrete_onehot, batch.done)

    # ----- subclass hooks ------------------------------------------------------------------------

    @abstractmethod
    def _layers(self) -> Sequence[Any]:
        """Every layer whose weights are learned, in a stable order."""

    def _trainable(self) -> list[Any]:
        return [v for layer in self._layers() for v in layer.trainable_weights]

    @abstractmethod
    def _raw_reward(self, obs: Tensor, next_obs: Tensor, continuous: Tensor, onehot: Tensor, done: Tensor) -> Tensor:
        """Each transition's reward before ``strength``, ``[B]``."""

    # ----- traced functions ---------------------------------------------------------------------

    def _batch_signature(self) -> list[Any]:
        """Observation, next observation, continuous actions, one-hot discrete actions, done."""
        t = tf()
        f32 = t.float32
        a = self.spec.action_spec
        return [
            t.TensorSpec([None, self.obs_size], f32),
            t.TensorSpec([None, self.obs_size], f32),
            t.TensorSpec([None, a.continuous_size], f32),
            t.TensorSpec([None, a.mask_size], f32),
            t.TensorSpec([None, 1], f32),
        ]

    def _compile(self) -> None:
        """Build the layers, the optimizer and the traced reward and train functions."""
        t = tf()
        signature = self._batch_signature()
        dummy = [np.zeros((1, s.shape[1] or 0), np.float32) for s in signature]
        self._raw_reward(*dummy)  # builds the layers before the optimizer sees their variables
        self._build_training(dummy)
        optimizer = self._optimizer
        optimizer.build(self._trainable())

        @t.function(input_signature=signature, autograph=False)
        def reward_fn(obs: Any, next_obs: Any, continuous: Any, onehot: Any, done: Any) -> Any:
            return self._raw_reward(obs, next_obs, continuous, onehot, done)

        self._reward_fn = reward_fn.get_concrete_function()
        self._train_fn = self._traced_train(signature)

    def _build_training(self, dummy: list[F32]) -> None:  # noqa: B027 - a hook: most signals need none
        """Build the layers that only training uses (called on one dummy row before the optimizer is built)."""

    @abstractmethod
    def _traced_train(self, signature: list[Any]) -> Any:
        """The concrete function of one update, given the batch signature."""

    # ----- the RewardSignal protocol -------------------------------------------------------------

    @property
    def updates(self) -> int:
        """Gradient steps taken so far (restored with a checkpoint)."""
        return int(self._updates.numpy())

    def evaluate(self, batch: SignalBatch) -> F32:
        batch = self._normalized(batch, learn=self.statistics_from_policy)
        with idle_while_computing():
            raw = self._reward_fn(
                batch.obs, batch.next_obs, batch.continuous, batch.discrete_onehot, batch.done
            ).numpy()
        return (raw * np.float32(self.strength)).astype(np.float32)

    def weights(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for layer in self._layers():
            out[f"{layer.name}/kernel"] = layer.kernel
            out[f"{layer.name}/bias"] = layer.bias
        return out

    def optimizer(self) -> Any:
        return self._optimizer

    def variables(self) -> Mapping[str, Any]:
        return {f"{self.key}/updates": self._updates}


class SelfSupervisedSignal(LearnedSignal):
    """A signal trained on the policy's own transitions only (curiosity, RND): a loss per minibatch."""

    @abstractmethod
    def _losses(self, obs: Tensor, next_obs: Tensor, continuous: Tensor, onehot: Tensor) -> list[Tensor]:
        """The total loss of a minibatch, then each loss of :attr:`loss_names`."""

    def _build_training(self, dummy: list[F32]) -> None:
        self._losses(*dummy[:4])

    def _traced_train(self, signature: list[Any]) -> Any:
        """One gradient step of :meth:`_losses` per row of a minibatch index matrix, traced."""
        t = tf()
        f32 = t.float32
        signature = signature[:4]
        variables = self._trainable()
        optimizer = self._optimizer
        reported = len(self.loss_names)
        updates = self._updates

        @t.function(input_signature=[*signature, t.TensorSpec([None, None], t.int32)], autograph=False)
        def train_fn(obs: Any, next_obs: Any, continuous: Any, onehot: Any, idx: Any) -> Any:
            n_mb = t.shape(idx)[0]

            def minibatch(i: Any) -> Any:
                b = idx[i]
                with t.GradientTape() as tape:
                    total, *parts = self._losses(
                        t.gather(obs, b), t.gather(next_obs, b), t.gather(continuous, b), t.gather(onehot, b)
                    )
                grads = tape.gradient(total, variables)
                adam_step(optimizer, grads, variables)
                finite = t.cast(t.math.is_finite(total), f32)
                return t.stack([*parts, 1.0 - finite])

            out = sum_over_range(n_mb, minibatch, reported + 1) / t.cast(t.maximum(n_mb, 1), f32)
            updates.assign_add(t.cast(n_mb, f32))
            return out

        return train_fn.get_concrete_function()

    def update(self, batch: SignalBatch, minibatches: npt.NDArray[np.int32]) -> tuple[dict[str, float], bool]:
        batch = self._normalized(batch)
        with idle_while_computing():
            out = self._train_fn(
                batch.obs, batch.next_obs, batch.continuous, batch.discrete_onehot, minibatches
            ).numpy()
        finite = bool(out[-1] == 0.0 and np.isfinite(out).all())
        return {name: float(value) for name, value in zip(self.loss_names, out, strict=False)}, finite
