"""Behavioral cloning (``behavioral_cloning``): the actor also learns to imitate a demonstration.

After each policy update the trainer calls :meth:`BehavioralCloning.update`: ``num_epoch``
passes (3 by default, as ML-Agents) over the demonstration's transitions in shuffled batches,
capped at ``samples_per_update`` rows per pass when given, with an Adam of its own over the
actor's variables. Its learning rate is the trainer's ``learning_rate × strength``, decaying
linearly to 0 at policy step ``steps`` when ``steps > 0``; once it has, cloning stops and the
loss reported is 0.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from asynctrainer.demos.reader import Demonstration
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.imitation.losses import bc_loss
from asynctrainer.nn.graph_loops import sum_over_range
from asynctrainer.nn.normalizer import Normalizer
from asynctrainer.nn.optim import adam_step
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.runtime.schedules import decayed_value
from asynctrainer.runtime.scheduling import idle_while_computing
from asynctrainer.runtime.snapshot import flatten_obs
from asynctrainer.settings import BehavioralCloningSettings

__all__ = ["DEFAULT_NUM_EPOCH", "MIN_LEARNING_RATE", "BehavioralCloning", "ClonablePolicy"]

F32 = npt.NDArray[np.float32]
#: ML-Agents' passes over the demonstration per update when ``num_epoch`` is not set.
DEFAULT_NUM_EPOCH = 3
#: The learning rate at which cloning stops.
MIN_LEARNING_RATE = 1e-10


class ClonablePolicy(Protocol):
    """What cloning needs of an actor: its distribution's parameters and its variables."""

    #: Whether an action is ``tanh`` of the Gaussian sample (SAC) or the sample itself (PPO).
    squashed: bool

    def actor_outputs(self, obs: Any) -> tuple[Any, Any, Any]: ...

    @property
    def actor_variables(self) -> list[Any]: ...


class BehavioralCloning:
    """Cloning of one actor on one demonstration (its rows flattened as the policy sees them).

    ``rng`` is the trainer's generator (batch order, sampling noise), so a checkpoint of the
    trainer restores this too.
    """

    def __init__(
        self,
        settings: BehavioralCloningSettings,
        demonstration: Demonstration,
        net: ClonablePolicy,
        spec: BehaviorSpec,
        *,
        behavior_name: str,
        learning_rate: float,
        batch_size: int,
        rng: np.random.Generator,
    ) -> None:
        demonstration.check_spec(spec, behavior_name)
        rows = demonstration.transitions()
        a = spec.action_spec
        self.obs = flatten_obs(rows.obs, len(rows))
        self.continuous = rows.continuous.astype(np.float32)
        self.onehot = a.one_hot(rows.discrete)
        self.settings = settings
        self.initial_learning_rate = learning_rate * settings.strength
        self.batch_size = min(settings.batch_size or batch_size, len(rows))
        self.num_epoch = settings.num_epoch or DEFAULT_NUM_EPOCH
        self._rng = rng  # the trainer's: checkpointed with it
        self.optimizer = tf_keras().optimizers.Adam(learning_rate=self.initial_learning_rate)
        self._compile(net, spec)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def _compile(self, net: ClonablePolicy, spec: BehaviorSpec) -> None:
        t = tf()
        f32 = t.float32
        a = spec.action_spec
        variables = net.actor_variables
        optimizer = self.optimizer
        optimizer.build(variables)
        branches = a.discrete_branches

        @t.function(
            input_signature=[
                t.TensorSpec([None, spec.observation_size], f32),
                t.TensorSpec([None, a.continuous_size], f32),
                t.TensorSpec([None, a.mask_size], f32),
                t.TensorSpec([None, None], t.int32),
                t.TensorSpec([], f32),
                t.TensorSpec([], t.int64),
            ],
            autograph=False,
        )
        def train_fn(obs: Any, continuous: Any, onehot: Any, idx: Any, lr: Any, seed: Any) -> Any:
            optimizer.learning_rate = lr
            n_mb = t.shape(idx)[0]

            def minibatch(i: Any) -> Any:
                b = idx[i]
                with t.GradientTape() as tape:
                    mean, log_std, logits = net.actor_outputs(t.gather(obs, b))
                    sampled = None
                    if mean is not None and log_std is not None:
                        noise = t.random.stateless_normal(t.shape(mean), t.stack([seed, t.cast(i, t.int64)]))
                        sampled = mean + t.exp(log_std) * noise
                        if net.squashed:
                            sampled = t.tanh(sampled)
                    loss = bc_loss(sampled, t.gather(continuous, b), logits, t.gather(onehot, b), branches)
                grads = tape.gradient(loss, variables)
                adam_step(optimizer, grads, variables)
                return t.stack([loss, 1.0 - t.cast(t.math.is_finite(loss), f32)])

            return sum_over_range(n_mb, minibatch, 2) / t.cast(t.maximum(n_mb, 1), f32)

        self._train_fn = train_fn.get_concrete_function()

    def learning_rate(self, policy_step: int) -> float:
        steps = self.settings.steps
        if steps <= 0:
            return self.initial_learning_rate
        return decayed_value("linear", self.initial_learning_rate, MIN_LEARNING_RATE, policy_step, steps)

    def minibatches(self) -> npt.NDArray[np.int32]:
        """Row indices of this update's gradient steps, ``[num_epoch × batches, batch_size]``."""
        n, size = len(self), self.batch_size
        possible = n // size
        cap = self.settings.samples_per_update // size
        batches = min(possible, cap) if cap else possible
        epochs = [self._rng.permutation(n)[: batches * size].reshape(batches, size) for _ in range(self.num_epoch)]
        return np.concatenate(epochs).astype(np.int32)

    def update(self, policy_step: int, normalizer: Normalizer | None) -> tuple[dict[str, float], bool]:
        """Run this update's cloning steps; the mean loss as ``Losses/Pretraining Loss``, and whether it was finite."""
        lr = self.learning_rate(policy_step)
        if lr <= MIN_LEARNING_RATE:
            return {"Losses/Pretraining Loss": 0.0}, True
        obs = normalizer.apply(self.obs) if normalizer is not None else self.obs
        seed = np.int64(self._rng.integers(2**62))
        with idle_while_computing():
            out = self._train_fn(obs, self.continuous, self.onehot, self.minibatches(), np.float32(lr), seed).numpy()
        return {"Losses/Pretraining Loss": float(out[0])}, bool(out[1] == 0.0 and np.isfinite(out).all())
