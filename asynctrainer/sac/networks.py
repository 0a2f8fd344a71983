"""SAC's Keras networks: a tanh-squashed Gaussian / categorical actor, twin Q critics, targets.

The actor has the shape :class:`~asynctrainer.runtime.snapshot.PolicySnapshot` runs in numpy
(tanh hidden layers, a logits head for all discrete branches, a mean head and a
state-independent log-std), so the snapshot with ``tanh_squash=True`` is the same policy:
the env receives ``tanh(u)`` for the Gaussian sample ``u``, and ``u`` is what trajectories
store. The critics take the observation and the squashed continuous action, and output one
value per discrete action (ML-Agents' ``QNetwork``), or a single value without branches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.nn.encoders import ObservationEncoder
from asynctrainer.nn.memory import LSTMLayer
from asynctrainer.nn.networks import (
    VariableReader,
    apply_body,
    apply_lstm,
    body_layers,
    layer_variables,
    snapshot_from_layers,
)
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.runtime.snapshot import LOG_2PI, MASK_PENALTY, PolicySnapshot

__all__ = ["QNetwork", "SACActor", "SACNetworks", "squashed_gaussian_log_prob"]

Tensor = Any

#: ML-Agents clamps the Gaussian's log-sigma to [-20, 2] (``GaussianDistribution``).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
#: ``log(1 − tanh²(u) + ε)``: the same ε as the snapshot and ML-Agents' ``TanhGaussianDistInstance``.
TANH_EPSILON = 1e-6


def squashed_gaussian_log_prob(u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``log π(tanh u) = Σ_i [log N(u_i; μ_i, σ_i) − log(1 − tanh²(u_i) + ε)]``, ``[B]``.

    The change of variables of SAC's appendix C (Haarnoja et al. 2018); the snapshot computes
    the same in numpy for the env action it sends.
    """
    t = tf()
    z = (u - mean) * t.exp(-log_std)
    gaussian = t.reduce_sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI, axis=1)
    squashed = t.tanh(u)
    return gaussian - t.reduce_sum(t.math.log(1.0 - squashed * squashed + TANH_EPSILON), axis=1)


def _named(layers: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        out[f"{layer.name}/kernel"] = layer.kernel
        out[f"{layer.name}/bias"] = layer.bias
    return out


class SACActor:
    """The policy: ``obs → (mean, log_std)`` and masked per-branch log-probabilities.

    With ``memory_size``, an LSTM of ``memory_size / 2`` units follows the body; the forward
    methods then take ``memory`` as :func:`~asynctrainer.nn.networks.apply_lstm` does.
    """

    def __init__(
        self,
        spec: BehaviorSpec,
        *,
        hidden_units: int,
        num_layers: int,
        seed: int,
        vis_encode_type: str = "simple",
        goal_conditioning: bool = True,
        memory_size: int = 0,
        sequence_length: int | None = None,
    ) -> None:
        keras = tf_keras()
        self.spec = spec
        a = spec.action_spec
        self.encoder = ObservationEncoder(
            spec, vis_encode_type=vis_encode_type, hidden_units=hidden_units, seed=seed + 500, name="actor_encoder"
        )
        self.body, self.hyper = body_layers(
            hidden_units,
            num_layers,
            seed,
            "actor",
            inputs=self.encoder.output_size,
            goal_size=len(self.encoder.goal_columns) if goal_conditioning else 0,
        )
        self.lstm = LSTMLayer(hidden_units, memory_size, seed=seed + 700, name="actor_lstm") if memory_size else None
        self.sequence_length = sequence_length
        self._reader: VariableReader | None = None
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
                a.continuous_size,
                kernel_initializer=keras.initializers.Orthogonal(0.01, seed=seed + 300),
                name="continuous_head",
            )
            if a.is_continuous()
            else None
        )
        self.log_std = (
            keras.Variable(np.zeros(a.continuous_size, np.float32), name="log_std") if a.is_continuous() else None
        )
        self.heads_of(np.zeros((1, spec.observation_size), np.float32))

    def _features(self, obs: Tensor) -> Tensor:
        encoded = self.encoder(obs)
        return apply_body(encoded, self.body, self.hyper, self.encoder.goals(encoded))

    def after_first_step(self, obs: Tensor, memory: Tensor) -> Tensor:
        """The memory after each sequence's first row (where its ``next_obs`` sequence starts), ``[B / T, m]``."""
        assert self.lstm is not None and self.sequence_length
        first = self._features(obs[:: self.sequence_length])
        return self.lstm.sequences(first, memory, 1)[1]

    def heads_of(self, obs: Tensor, memory: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """(continuous mean, raw logits) of ``obs``; None for a missing part."""
        h = apply_lstm(self.lstm, self._features(obs), memory, self.sequence_length)
        mean = self.continuous_head(h) if self.continuous_head is not None else None
        logits = self.discrete_head(h) if self.discrete_head is not None else None
        return mean, logits

    def clipped_log_std(self) -> Tensor:
        assert self.log_std is not None
        return tf().clip_by_value(tf().convert_to_tensor(self.log_std), LOG_STD_MIN, LOG_STD_MAX)

    #: Actions are ``tanh`` of the Gaussian sample (behavioral cloning compares the squashed action).
    squashed = True

    def actor_outputs(
        self, obs: Tensor, memory: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Gaussian mean ``[B, c]`` and log-std ``[c]`` (before the squash), unmasked logits ``[B, Σ branches]``."""
        mean, logits = self.heads_of(obs, memory)
        return mean, self.clipped_log_std() if mean is not None else None, logits

    @property
    def actor_variables(self) -> list[Any]:
        return self.variables

    def distribution(
        self, obs: Tensor, masks: Tensor, memory: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor]]:
        """(mean ``[B, C]``, log_std ``[C]``, masked log-probabilities ``[B, n_b]`` per branch)."""
        t = tf()
        mean, logits = self.heads_of(obs, memory)
        log_std = self.clipped_log_std() if mean is not None else None
        branch_logp: list[Tensor] = []
        if logits is not None:
            # As the snapshot and ML-Agents' export: a masked logit becomes −1e8 before the softmax.
            logits = logits * masks - MASK_PENALTY * (1.0 - masks)
            start = 0
            for size in self.spec.action_spec.discrete_branches:
                branch_logp.append(t.nn.log_softmax(logits[:, start : start + size], axis=1))
                start += size
        return mean, log_std, branch_logp

    def log_prob(
        self, obs: Tensor, continuous: Tensor, discrete: Tensor, masks: Tensor, memory: Tensor | None = None
    ) -> Tensor:
        """``[B]`` log-probability of the env action ``(tanh(continuous), discrete)``, summed over parts."""
        t = tf()
        mean, log_std, branch_logp = self.distribution(obs, masks, memory)
        out = t.zeros(t.shape(obs)[:1], t.float32)
        if mean is not None:
            out += squashed_gaussian_log_prob(continuous, mean, log_std)
        for b, logp in enumerate(branch_logp):
            out += t.gather(logp, discrete[:, b], axis=1, batch_dims=1)
        return out

    @property
    def variables(self) -> list[Any]:
        out: list[Any] = list(self.encoder.variables)
        for layer in [*self.body, self.discrete_head, self.continuous_head]:
            if layer is not None:
                out += layer.trainable_weights
        if self.hyper is not None:
            out += self.hyper.variables
        if self.lstm is not None:
            out += self.lstm.variables
        if self.log_std is not None:
            out.append(self.log_std)
        return out

    def named_variables(self) -> dict[str, Any]:
        out = self.encoder.named_variables()
        out.update(_named([layer for layer in [*self.body, self.discrete_head, self.continuous_head] if layer]))
        if self.hyper is not None:
            out.update(self.hyper.named_variables())
        if self.lstm is not None:
            out.update(self.lstm.named_variables())
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
        """A frozen numpy copy with ``tanh_squash=True`` (call on the update thread)."""
        # The snapshot uses log_std as given, so it gets the clamped value the TF actor uses.
        log_std = None if self.log_std is None else self.clipped_log_std().numpy()
        hyper_variables = [] if self.hyper is None else self.hyper.variables
        lstm_variables = [] if self.lstm is None else self.lstm.variables
        if self._reader is None:
            self._reader = VariableReader(
                self.encoder.variables
                + layer_variables([*self.body, self.discrete_head, self.continuous_head])
                + hyper_variables
                + lstm_variables
            )
        values = self._reader()
        lstm = None
        if lstm_variables:
            values, lstm = values[: -len(lstm_variables)], values[-len(lstm_variables) :]
        hyper = None
        if self.hyper is not None:
            values, hyper = values[: -len(hyper_variables)], self.hyper.snapshot(values[-len(hyper_variables) :])
        return snapshot_from_layers(
            behavior_name,
            version,
            step,
            self.spec,
            values,
            len(self.body),
            self.discrete_head is not None,
            self.continuous_head is not None,
            log_std,
            obs_mean=obs_mean,
            obs_std=obs_std,
            tanh_squash=True,
            encoder=self.encoder,
            hyper=hyper,
            lstm=lstm,
        )


class QNetwork:
    """``Q(s, tanh u) → [B, streams · M]``: per reward stream, one value per discrete action (or 1 without branches).

    Stream ``k`` is ``values[:, k·M : (k+1)·M]`` (:meth:`stream`), one per reward signal, as
    ML-Agents' critics have one head per signal.
    """

    def __init__(
        self,
        spec: BehaviorSpec,
        *,
        hidden_units: int,
        num_layers: int,
        seed: int,
        name: str,
        streams: int = 1,
        vis_encode_type: str = "simple",
        goal_conditioning: bool = True,
        memory_size: int = 0,
        sequence_length: int | None = None,
    ) -> None:
        keras = tf_keras()
        a = spec.action_spec
        self.encoder = ObservationEncoder(
            spec, vis_encode_type=vis_encode_type, hidden_units=hidden_units, seed=seed + 500, name=f"{name}_encoder"
        )
        self.lstm = LSTMLayer(hidden_units, memory_size, seed=seed + 700, name=f"{name}_lstm") if memory_size else None
        self.sequence_length = sequence_length
        self.continuous_size = a.continuous_size
        self.per_stream = a.mask_size if a.is_discrete() else 1
        self.body, self.hyper = body_layers(
            hidden_units,
            num_layers,
            seed,
            name,
            inputs=self.encoder.output_size + a.continuous_size,
            goal_size=len(self.encoder.goal_columns) if goal_conditioning else 0,
        )
        self.head = keras.layers.Dense(
            streams * self.per_stream,
            kernel_initializer=keras.initializers.Orthogonal(1.0, seed=seed + 50),
            name=f"{name}_head",
        )
        rows = sequence_length or 1  # one whole sequence builds the variables
        self(np.zeros((rows, spec.observation_size), np.float32), np.zeros((rows, a.continuous_size), np.float32))

    def __call__(self, obs: Tensor, squashed_action: Tensor) -> Tensor:
        """Q of each row; with memory, the rows are sequences of ``sequence_length``, each from zero memory
        (ML-Agents' SAC critics start every sequence from zeros)."""
        t = tf()
        encoded = self.encoder(obs)
        h = t.concat([encoded, squashed_action], axis=1) if self.continuous_size else encoded
        h = apply_body(h, self.body, self.hyper, self.encoder.goals(encoded))
        if self.lstm is not None:
            length = self.sequence_length or 1
            zeros = t.zeros([t.shape(h)[0] // length, self.lstm.memory_size], t.float32)
            h = self.lstm.sequences(h, zeros, length)[0]
        return self.head(h)

    def stream(self, values: Tensor, k: int) -> Tensor:
        """Stream ``k`` of :meth:`__call__`'s output, ``[B, M]``."""
        return values[:, k * self.per_stream : (k + 1) * self.per_stream]

    @property
    def variables(self) -> list[Any]:
        out: list[Any] = list(self.encoder.variables)
        for layer in [*self.body, self.head]:
            out += layer.trainable_weights
        out += [] if self.hyper is None else self.hyper.variables
        return out + ([] if self.lstm is None else self.lstm.variables)

    def named_variables(self) -> dict[str, Any]:
        hyper = {} if self.hyper is None else self.hyper.named_variables()
        lstm = {} if self.lstm is None else self.lstm.named_variables()
        return {**self.encoder.named_variables(), **_named([*self.body, self.head]), **hyper, **lstm}


class SACNetworks:
    """Everything SAC learns: actor, twin critics, their targets and the log-temperatures.

    The targets start as copies of the critics. ``log_alpha`` has one entry per entropy
    component (continuous part first, then each branch), initialised to ``log(init_entcoef)``.
    """

    def __init__(
        self,
        spec: BehaviorSpec,
        *,
        hidden_units: int,
        num_layers: int,
        seed: int,
        init_entcoef: float,
        streams: int = 1,
        vis_encode_type: str = "simple",
        goal_conditioning: bool = True,
        memory_size: int = 0,
        sequence_length: int | None = None,
    ) -> None:
        keras = tf_keras()
        self.spec = spec
        a = spec.action_spec
        kw: dict[str, Any] = {
            "hidden_units": hidden_units,
            "num_layers": num_layers,
            "vis_encode_type": vis_encode_type,
            "goal_conditioning": goal_conditioning,
            "memory_size": memory_size,
            "sequence_length": sequence_length,
        }
        self.actor = SACActor(spec, seed=seed, **kw)
        self.q1 = QNetwork(spec, seed=seed + 1000, name="q1", streams=streams, **kw)
        self.q2 = QNetwork(spec, seed=seed + 2000, name="q2", streams=streams, **kw)
        self.q1_target = QNetwork(spec, seed=seed + 1000, name="q1_target", streams=streams, **kw)
        self.q2_target = QNetwork(spec, seed=seed + 2000, name="q2_target", streams=streams, **kw)
        for target, source in zip(self.target_variables, self.critic_variables, strict=True):
            target.assign(source)
        components = (1 if a.is_continuous() else 0) + a.discrete_size
        self.log_alpha = keras.Variable(
            np.full(components, math.log(init_entcoef), np.float32), name="log_alpha", dtype="float32"
        )

    @property
    def critic_variables(self) -> list[Any]:
        return self.q1.variables + self.q2.variables

    @property
    def target_variables(self) -> list[Any]:
        return self.q1_target.variables + self.q2_target.variables

    def named_variables(self) -> dict[str, Any]:
        """Every network variable by a stable name (``actor_0/kernel``, ``q2_target_head/bias``, ``log_std``)."""
        out = self.actor.named_variables()
        for net in (self.q1, self.q2, self.q1_target, self.q2_target):
            out.update(net.named_variables())
        return out
