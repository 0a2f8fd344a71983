"""Generative adversarial imitation (``reward_signals.gail``), with VAIL as an option, as ML-Agents builds it.

A discriminator ``D`` learns to tell the demonstration's transitions (label 1) from the policy's
(label 0); the policy is rewarded ``−log(1 − D)`` where it looks like the expert. ``D`` is the
signal's dense body (swish) over the observation (with ``use_actions``, also the actions and
the done flag), then a sigmoid unit. With ``use_vail`` a 128-wide variational bottleneck sits
before the unit: ``z = μ + σ·ε`` in training, ``μ`` for rewards, its KL kept near 0.5 by an
adaptive ``β``. A gradient penalty (×10) keeps ``D``'s gradient norm near 1 on points between
expert and policy observations.

Each minibatch of the policy's update is matched with as many expert rows, drawn with
replacement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.demos.reader import DemoTransitions
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.nn.graph_loops import sum_over_range
from asynctrainer.nn.networks import mlp
from asynctrainer.nn.optim import adam_step
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.rewards import losses
from asynctrainer.rewards.base import LearnedSignal
from asynctrainer.rewards.signals import SignalBatch
from asynctrainer.runtime.scheduling import idle_while_computing
from asynctrainer.runtime.snapshot import flatten_obs
from asynctrainer.settings import RewardSignalSettings

__all__ = ["GAILSignal"]

Tensor = Any
F32 = npt.NDArray[np.float32]
#: Width of VAIL's bottleneck, its target KL and the step of its β.
VAIL_UNITS, VAIL_TARGET_KL, VAIL_BETA_STEP = 128, 0.5, 5e-4
#: The gradient penalty's weight.
GRADIENT_PENALTY_WEIGHT = 10.0


class GAILSignal(LearnedSignal):
    key = "gail"
    stat_name = "Gail"
    ignore_done = False
    default_learning_rate = 3e-4
    statistics_from_policy = False  # its normaliser holds the expert's statistics

    def __init__(
        self,
        spec: BehaviorSpec,
        settings: RewardSignalSettings,
        *,
        seed: int,
        expert: DemoTransitions,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(spec, settings, seed=seed)
        keras = tf_keras()
        self.use_actions = bool(settings.use_actions)
        self.use_vail = bool(settings.use_vail)
        self.loss_names = (
            "Losses/GAIL Loss",
            "Policy/GAIL Policy Estimate",
            "Policy/GAIL Expert Estimate",
            "Policy/GAIL Grad Mag Loss",
        ) + (("Policy/GAIL Beta", "Losses/GAIL KL Loss") if self.use_vail else ())
        a = spec.action_spec
        self.expert = SignalBatch(
            flatten_obs(expert.obs, len(expert)),
            flatten_obs(expert.obs, len(expert)),  # GAIL reads no next observation
            expert.continuous.astype(np.float32),
            a.one_hot(expert.discrete),
            expert.done.astype(np.float32).reshape(-1, 1),
        )
        self._rng = rng  # the trainer's: checkpointed with it
        if self.normalizer is not None:  # the expert's statistics (ML-Agents updates GAIL's from expert rows only)
            self.normalizer.update(self.expert.obs)
            self.expert = self._normalized(self.expert)
        self.body = mlp(self.network.hidden_units, self.network.num_layers, seed, "gail_body", activation="swish")
        self.mu = (
            keras.layers.Dense(
                VAIL_UNITS,
                kernel_initializer=keras.initializers.VarianceScaling(0.02, "fan_in", "truncated_normal", seed + 1),
                name="gail_mu",
            )
            if self.use_vail
            else None
        )
        self.sigma = keras.Variable(np.ones(VAIL_UNITS, np.float32), name="gail_sigma") if self.use_vail else None
        self.beta = keras.Variable(0.0, trainable=False, name="gail_beta")
        self.estimate_layer = keras.layers.Dense(
            1,
            activation="sigmoid",
            kernel_initializer=keras.initializers.VarianceScaling(0.04, "fan_avg", "uniform", seed + 2),
            name="gail_estimate",
        )
        self._compile()

    def _layers(self) -> Sequence[Any]:
        return [*self.body, *([self.mu] if self.mu is not None else []), self.estimate_layer]

    def _trainable(self) -> list[Any]:
        return super()._trainable() + ([self.sigma] if self.sigma is not None else [])

    def weights(self) -> Mapping[str, Any]:
        out = dict(super().weights())
        if self.sigma is not None:
            out["gail_sigma"] = self.sigma
        return out

    def variables(self) -> Mapping[str, Any]:
        return {**super().variables(), "gail/beta": self.beta}

    # ----- the discriminator ----------------------------------------------------------------------

    def _estimate(
        self, obs: Tensor, continuous: Tensor, onehot: Tensor, done: Tensor, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``D`` per row ``[B]``, and VAIL's ``μ`` (None without VAIL); ``noise`` samples the bottleneck."""
        t = tf()
        h = t.concat([obs, continuous, onehot, done], axis=1) if self.use_actions else obs
        for layer in self.body:
            h = layer(h)
        mu = None
        if self.mu is not None and self.sigma is not None:
            mu = self.mu(h)
            h = mu + self.sigma * noise if noise is not None else mu
        return t.squeeze(self.estimate_layer(h), axis=1), mu

    def _raw_reward(self, obs: Tensor, next_obs: Tensor, continuous: Tensor, onehot: Tensor, done: Tensor) -> Tensor:
        estimate, _ = self._estimate(obs, continuous, onehot, done)
        return losses.gail_reward(estimate)

    def _minibatch_losses(self, policy: list[Tensor], expert: list[Tensor], seed: Tensor) -> list[Tensor]:
        """The total loss, then each reported value, for one policy and one expert minibatch."""
        t = tf()
        noise = None
        n = t.shape(policy[0])[0]
        seeds = [t.stack([seed, t.constant(k, t.int64)]) for k in range(6)]
        if self.use_vail:
            noise = t.random.stateless_normal(t.stack([n, VAIL_UNITS]), seeds[0])
            expert_noise = t.random.stateless_normal(t.stack([n, VAIL_UNITS]), seeds[1])
        policy_d, policy_mu = self._estimate(policy[0], policy[1], policy[2], policy[3], noise=noise)
        expert_d, expert_mu = self._estimate(
            expert[0], expert[1], expert[2], expert[3], noise=expert_noise if self.use_vail else None
        )
        d_loss = losses.discriminator_loss(expert_d, policy_d)
        total = d_loss
        reported = [d_loss, t.reduce_mean(policy_d), t.reduce_mean(expert_d)]
        # Points between the policy's and the expert's inputs, mixed per element and per input.
        mixed = [
            eps * p + (1.0 - eps) * e
            for p, e, eps in (
                (p, e, t.random.stateless_uniform(t.shape(p), seeds[2 + k]))
                for k, (p, e) in enumerate(zip(policy, expert, strict=True))
            )
        ]
        with t.GradientTape() as inner:
            inner.watch(mixed[0])
            mixed_d, _ = self._estimate(mixed[0], mixed[1], mixed[2], mixed[3], noise=noise)
            summed = t.reduce_sum(mixed_d)
        penalty = GRADIENT_PENALTY_WEIGHT * losses.gradient_penalty(inner.gradient(summed, mixed[0]))
        total += penalty
        reported.append(penalty)
        if self.use_vail and self.sigma is not None and policy_mu is not None and expert_mu is not None:
            kl = losses.vail_kl(expert_mu, policy_mu, self.sigma)
            # β follows the KL towards its target, never below 0; the step uses the new β (as ML-Agents).
            beta = t.stop_gradient(t.maximum(0.0, self.beta + VAIL_BETA_STEP * (kl - VAIL_TARGET_KL)))
            self.beta.assign(beta)
            total += beta * (kl - VAIL_TARGET_KL)
            reported += [beta, kl]
        return [total, *reported]

    def _traced_train(self, signature: list[Any]) -> Any:
        t = tf()
        f32 = t.float32
        variables = self._trainable()
        optimizer = self._optimizer
        updates = self._updates
        reported = len(self.loss_names)
        inputs = [signature[0], signature[2], signature[3], signature[4]]  # obs, continuous, onehot, done

        @t.function(
            input_signature=[
                *inputs,
                t.TensorSpec([None, None], t.int32),
                *inputs,
                t.TensorSpec([None, None], t.int32),
                t.TensorSpec([], t.int64),
            ],
            autograph=False,
        )
        def train_fn(*args: Any) -> Any:
            policy, idx, expert, expert_idx, seed = list(args[:4]), args[4], list(args[5:9]), args[9], args[10]
            n_mb = t.shape(idx)[0]

            def minibatch(i: Any) -> Any:
                with t.GradientTape() as tape:
                    total, *parts = self._minibatch_losses(
                        [t.gather(x, idx[i]) for x in policy],
                        [t.gather(x, expert_idx[i]) for x in expert],
                        seed + t.cast(i, t.int64) * 7919,
                    )
                grads = tape.gradient(total, variables)
                adam_step(optimizer, grads, variables)
                return t.stack([*parts, 1.0 - t.cast(t.math.is_finite(total), f32)])

            out = sum_over_range(n_mb, minibatch, reported + 1) / t.cast(t.maximum(n_mb, 1), f32)
            updates.assign_add(t.cast(n_mb, f32))
            return out

        return train_fn.get_concrete_function()

    def update(self, batch: SignalBatch, minibatches: npt.NDArray[np.int32]) -> tuple[dict[str, float], bool]:
        batch = self._normalized(batch)
        expert_idx = self._rng.integers(len(self.expert), size=minibatches.shape).astype(np.int32)
        seed = np.int64(self._rng.integers(2**62))
        e = self.expert
        with idle_while_computing():
            out = self._train_fn(
                batch.obs, batch.continuous, batch.discrete_onehot, batch.done, minibatches,
                e.obs, e.continuous, e.discrete_onehot, e.done, expert_idx, seed,
            ).numpy()  # fmt: skip
        finite = bool(out[-1] == 0.0 and np.isfinite(out).all())
        return {name: float(value) for name, value in zip(self.loss_names, out, strict=False)}, finite
