"""Keras actor and critic networks, and the TF twin of the snapshot's distribution.

The actor is an MLP with tanh hidden layers and one head per action part: logits for all
discrete branches (split per branch, masked as ML-Agents does) and a Gaussian mean with a
state-independent log-std for continuous actions. The critic is a separate MLP. Hidden
activations, masks and clipping match :class:`~asynctrainer.runtime.snapshot.PolicySnapshot`
exactly, so acting in numpy and learning in TF see one policy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.export.onnx_acting import accelerate
from asynctrainer.nn.conditioning import HyperLayer
from asynctrainer.nn.encoders import ObservationEncoder
from asynctrainer.nn.memory import LSTMLayer
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.runtime.conditioning import Hyper
from asynctrainer.runtime.snapshot import LOG_2PI, MASK_PENALTY, PolicySnapshot

__all__ = [
    "ActorCritic",
    "VariableReader",
    "apply_body",
    "apply_lstm",
    "body_layers",
    "layer_variables",
    "mlp",
    "snapshot_from_layers",
]

Tensor = Any


class VariableReader:
    """Reads a fixed list of variables in one TensorFlow call.

    One ``.numpy()`` per variable is one eager op each, all Python-side dispatch while the
    update thread holds the GIL the event loop waits for; a concrete function that returns
    every variable costs about 40 % of that. Variables are captured by reference, so each
    call returns their current values.
    """

    def __init__(self, variables: list[Any]) -> None:
        t = tf()
        captured = list(variables)
        self._fn = t.function(lambda: [t.identity(v) for v in captured], autograph=False).get_concrete_function()

    def __call__(self) -> list[np.ndarray]:
        return [np.array(x.numpy()) for x in self._fn()]


def layer_variables(layers: list[Any]) -> list[Any]:
    """``[kernel, bias]`` of each layer that exists, in order (what a snapshot copies)."""
    return [v for layer in layers if layer is not None for v in (layer.kernel, layer.bias)]


def snapshot_from_layers(
    behavior_name: str,
    version: int,
    step: int,
    spec: BehaviorSpec,
    values: list[np.ndarray],
    n_hidden: int,
    has_discrete: bool,
    has_continuous: bool,
    log_std: np.ndarray | None,
    *,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
    tanh_squash: bool = False,
    encoder: ObservationEncoder | None = None,
    lstm: list[np.ndarray] | None = None,
    hyper: Hyper | None = None,
) -> PolicySnapshot:
    """A frozen :class:`PolicySnapshot` from the values of :func:`layer_variables`.

    ``values`` holds the ``encoder``'s variables (:attr:`ObservationEncoder.variables`), then
    kernel and bias of ``n_hidden`` hidden layers, then of the discrete head and the continuous
    head where they exist.
    """
    encoders, attention = ((), None) if encoder is None else encoder.snapshot_ops(values)
    pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    hidden, heads = pairs[:n_hidden], iter(pairs[n_hidden:])
    snapshot = PolicySnapshot.create(
        behavior_name,
        version,
        step,
        spec,
        hidden=hidden,
        discrete_head=next(heads) if has_discrete else None,
        continuous_head=next(heads) if has_continuous else None,
        log_std=log_std,
        obs_mean=obs_mean,
        obs_std=obs_std,
        tanh_squash=tanh_squash,
        encoders=encoders,
        attention=attention,
        lstm=None if lstm is None else (lstm[0], lstm[1], lstm[2]),
        hyper=hyper,
    )
    return accelerate(snapshot)  # images act through onnxruntime, when installed


def mlp(units: int, layers: int, seed: int, name: str, *, activation: str = "tanh") -> list[Any]:
    """``layers`` dense layers of ``units`` (orthogonal init, gain √2) named ``<name>_<i>``."""
    keras = tf_keras()
    return [
        keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed + i),
            name=f"{name}_{i}",
        )
        for i in range(layers)
    ]


def body_layers(
    units: int, layers: int, seed: int, name: str, *, inputs: int, goal_size: int
) -> tuple[list[Any], HyperLayer | None]:
    """A network's hidden layers: ``layers`` tanh Dense (:func:`mlp`), or, with a goal (``goal_size`` > 0),
    ``layers − 1`` of them and a goal-conditioned :class:`HyperLayer` last (ML-Agents' ``ConditionalEncoder``).

    :param inputs: the width of the body's input (the hypernetwork layer's when it is the only one).
    """
    if not goal_size:
        return mlp(units, layers, seed, name), None
    hyper = HyperLayer(units if layers > 1 else inputs, goal_size, units, seed=seed + 1100, name=f"{name}_hyper")
    return mlp(units, layers - 1, seed, name), hyper


def apply_body(h: Tensor, body: list[Any], hyper: HyperLayer | None, goals: Tensor) -> Tensor:
    """The layers of :func:`body_layers` on ``h``; ``goals`` feeds the hypernetwork layer, when there is one."""
    for layer in body:
        h = layer(h)
    return h if hyper is None else hyper(h, goals)


def apply_lstm(lstm: LSTMLayer | None, h: Tensor, memory: Tensor | None, sequence_length: int | None) -> Tensor:
    """The LSTM (when there is one) on the rows ``h``: ``memory`` ``[B / T, m]`` starts each of the sequences
    of ``sequence_length`` rows; None makes every row a sequence of one step from zeros (BC's rows)."""
    if lstm is None:
        return h
    t = tf()
    if memory is None:
        return lstm.sequences(h, t.zeros([t.shape(h)[0], lstm.memory_size], t.float32), 1)[0]
    return lstm.sequences(h, memory, sequence_length)[0]


class ActorCritic:
    """An actor and a critic for one behavior spec.

    :param shared_critic: the value head reads the actor's hidden layers (ML-Agents'
        ``network_settings.shared_critic``) instead of a body of its own; one loss trains both.
    :param value_heads: one value output per reward signal (ML-Agents' value heads on one critic
        body), in the order of the trainer's signals; 0: an actor alone (a trainer with a critic
        of its own, as POCA's centralised one).
    :param vis_encode_type: the encoder of visual observations (actor and critic have one each,
        or share the actor's with ``shared_critic``).
    :param memory_size: with memory (> 0), an LSTM of ``memory_size / 2`` units follows the
        actor's body and another the critic's (one with ``shared_critic``). The forward methods
        then take ``memory`` ``[B, memory_size]``: the rows are ``B`` sequences of equal length,
        each starting from its memory (None: every row is a sequence of one step from zeros).
    :param sequence_length: the length of the training sequences, unrolled in traced graphs.
    :param goal_conditioning: with goal observations (``goal_signal``), the last hidden layer of
        the actor and of the critic is a :class:`~asynctrainer.nn.conditioning.HyperLayer` of the
        goal (``goal_conditioning_type: hyper``); without, goals are ordinary inputs only.
    """

    def __init__(
        self,
        spec: BehaviorSpec,
        *,
        hidden_units: int,
        num_layers: int,
        seed: int,
        shared_critic: bool = False,
        value_heads: int = 1,
        vis_encode_type: str = "simple",
        memory_size: int = 0,
        sequence_length: int | None = None,
        goal_conditioning: bool = True,
    ) -> None:
        keras = tf_keras()
        tf()
        self.spec = spec
        a = spec.action_spec
        encoder: dict[str, Any] = {"vis_encode_type": vis_encode_type, "hidden_units": hidden_units}
        self.actor_encoder = ObservationEncoder(spec, seed=seed + 500, name="actor_encoder", **encoder)
        #: False: an actor alone (``value_heads`` 0); its critic parts are then the actor's, unused.
        self.has_critic = value_heads > 0
        shared_critic = shared_critic or not self.has_critic
        self.critic_encoder = (
            self.actor_encoder
            if shared_critic
            else ObservationEncoder(spec, seed=seed + 600, name="critic_encoder", **encoder)
        )
        goals = len(self.actor_encoder.goal_columns) if goal_conditioning else 0
        self.actor_body, self.actor_hyper = body_layers(
            hidden_units, num_layers, seed, "actor", inputs=self.actor_encoder.output_size, goal_size=goals
        )
        self.shared_critic = shared_critic
        self.critic_body, self.critic_hyper = (
            (self.actor_body, self.actor_hyper)
            if shared_critic
            else body_layers(
                hidden_units, num_layers, seed + 100, "critic", inputs=self.critic_encoder.output_size, goal_size=goals
            )
        )
        self.memory_size = memory_size
        self.sequence_length = sequence_length
        self.actor_lstm = (
            LSTMLayer(hidden_units, memory_size, seed=seed + 700, name="actor_lstm") if memory_size else None
        )
        self.critic_lstm = (
            self.actor_lstm
            if shared_critic or not memory_size
            else LSTMLayer(hidden_units, memory_size, seed=seed + 800, name="critic_lstm")
        )
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
                kernel_initializer=keras.initializers.Orthogonal(0.2, seed=seed + 300),
                name="continuous_head",
            )
            if a.is_continuous()
            else None
        )
        self.log_std = (
            keras.Variable(np.zeros(a.continuous_size, np.float32), name="log_std") if a.is_continuous() else None
        )
        self.value_head = (
            keras.layers.Dense(
                value_heads, kernel_initializer=keras.initializers.Orthogonal(1.0, seed=seed + 400), name="value_head"
            )
            if self.has_critic
            else None
        )
        dummy = np.zeros((1, spec.observation_size), np.float32)
        self.features(dummy)
        if self.has_critic:
            self.value(dummy)
        actor = self.actor_encoder.variables + layer_variables(
            [*self.actor_body, self.discrete_head, self.continuous_head]
        )
        if self.actor_lstm is not None:
            actor += self.actor_lstm.variables
        if self.actor_hyper is not None:
            actor += self.actor_hyper.variables
        self._read_actor = VariableReader(actor if self.log_std is None else [*actor, self.log_std])

    # ----- forward ------------------------------------------------------------------------------

    def features(self, obs: Tensor, memory: Tensor | None = None) -> Tensor:
        h = self._hidden(obs, *self._actor, memory)
        if self.discrete_head is not None:
            self.discrete_head(h)
        if self.continuous_head is not None:
            self.continuous_head(h)
        return h

    @property
    def _actor(self) -> tuple[ObservationEncoder, list[Any], HyperLayer | None, LSTMLayer | None]:
        return self.actor_encoder, self.actor_body, self.actor_hyper, self.actor_lstm

    @property
    def _critic(self) -> tuple[ObservationEncoder, list[Any], HyperLayer | None, LSTMLayer | None]:
        return self.critic_encoder, self.critic_body, self.critic_hyper, self.critic_lstm

    @staticmethod
    def _body(obs: Tensor, encoder: ObservationEncoder, body: list[Any], hyper: HyperLayer | None) -> Tensor:
        """Encoder, dense layers and the goal-conditioned last layer (before any LSTM)."""
        encoded = encoder(obs)
        return apply_body(encoded, body, hyper, encoder.goals(encoded))

    def _hidden(
        self,
        obs: Tensor,
        encoder: ObservationEncoder,
        body: list[Any],
        hyper: HyperLayer | None,
        lstm: LSTMLayer | None,
        memory: Tensor | None,
    ) -> Tensor:
        return apply_lstm(lstm, self._body(obs, encoder, body, hyper), memory, self.sequence_length)

    def value(self, obs: Tensor, memory: Tensor | None = None) -> Tensor:
        """Each value head's estimate, ``[B, value_heads]``."""
        assert self.value_head is not None, "an actor alone has no value heads"
        return self.value_head(self._hidden(obs, *self._critic, memory))

    def value_sequences(self, obs: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """A recurrent critic over sequences: each row's values ``[rows, heads]`` and the memory after it."""
        assert self.critic_lstm is not None and self.value_head is not None
        h = self._body(obs, self.critic_encoder, self.critic_body, self.critic_hyper)
        out, memories = self.critic_lstm.sequences(h, memory)
        return self.value_head(out), memories

    #: Actions are the Gaussian sample itself (clipped to [-1, 1] by the env side), not squashed.
    squashed = False

    def actor_outputs(
        self, obs: Tensor, memory: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The policy's parameters: Gaussian mean ``[B, c]`` and log-std ``[c]``, discrete logits ``[B, Σ branches]``.

        Each is None where the action spec has no such part; logits are unmasked.
        """
        t = tf()
        h = self._hidden(obs, *self._actor, memory)
        mean = log_std = logits = None
        if self.continuous_head is not None and self.log_std is not None:
            mean, log_std = self.continuous_head(h), t.convert_to_tensor(self.log_std)
        if self.discrete_head is not None:
            logits = self.discrete_head(h)
        return mean, log_std, logits

    def log_prob_entropy(
        self, obs: Tensor, continuous: Tensor, discrete: Tensor, masks: Tensor, memory: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Log-probability (summed over action parts) and entropy of the given actions, ``[B]`` each."""
        t = tf()
        mean, log_std, logits = self.actor_outputs(obs, memory)
        log_prob = t.zeros(t.shape(obs)[:1], t.float32)
        entropy = t.zeros(t.shape(obs)[:1], t.float32)
        if mean is not None and log_std is not None:
            z = (continuous - mean) * t.exp(-log_std)
            log_prob += t.reduce_sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI, axis=1)
            entropy += t.reduce_sum(log_std + 0.5 * (1.0 + LOG_2PI))
        if logits is not None:
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
        out: list[Any] = list(self.actor_encoder.variables)
        for layer in self.actor_body:
            out += layer.trainable_weights
        for head in (self.discrete_head, self.continuous_head):
            if head is not None:
                out += head.trainable_weights
        if self.actor_lstm is not None:
            out += self.actor_lstm.variables
        if self.actor_hyper is not None:
            out += self.actor_hyper.variables
        if self.log_std is not None:
            out.append(self.log_std)
        return out

    @property
    def critic_variables(self) -> list[Any]:
        """The critic's own variables (with ``shared_critic``, the value head only: the body is the actor's)."""
        out: list[Any] = [] if self.shared_critic else list(self.critic_encoder.variables)
        for layer in [] if self.shared_critic else self.critic_body:
            out += layer.trainable_weights
        if self.critic_lstm is not None and not self.shared_critic:
            out += self.critic_lstm.variables
        if self.critic_hyper is not None and not self.shared_critic:
            out += self.critic_hyper.variables
        return out + ([] if self.value_head is None else self.value_head.trainable_weights)

    @property
    def trainable_variables(self) -> list[Any]:
        return self.actor_variables + self.critic_variables

    def named_variables(self) -> dict[str, Any]:
        """Variables by a stable name (``actor_0/kernel``, ``value_head/bias``, ``log_std``)."""
        out: dict[str, Any] = self.actor_encoder.named_variables()
        if not self.shared_critic:
            out.update(self.critic_encoder.named_variables())
        critic_body = [] if self.shared_critic else self.critic_body
        for layer in [*self.actor_body, self.discrete_head, self.continuous_head, *critic_body, self.value_head]:
            if layer is not None:
                out[f"{layer.name}/kernel"] = layer.kernel
                out[f"{layer.name}/bias"] = layer.bias
        if self.log_std is not None:
            out["log_std"] = self.log_std
        for lstm in {id(x): x for x in (self.actor_lstm, self.critic_lstm) if x is not None}.values():
            out.update(lstm.named_variables())
        for hyper in {id(x): x for x in (self.actor_hyper, self.critic_hyper) if x is not None}.values():
            out.update(hyper.named_variables())
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
        values = self._read_actor()
        log_std = None if self.log_std is None else values.pop()
        hyper = None
        if self.actor_hyper is not None:
            count = len(self.actor_hyper.variables)
            values, hyper = values[:-count], self.actor_hyper.snapshot(values[-count:])
        lstm = None
        if self.actor_lstm is not None:
            values, lstm = values[:-3], values[-3:]
        return snapshot_from_layers(
            behavior_name,
            version,
            step,
            self.spec,
            values,
            len(self.actor_body),
            self.discrete_head is not None,
            self.continuous_head is not None,
            log_std,
            obs_mean=obs_mean,
            obs_std=obs_std,
            encoder=self.actor_encoder,
            lstm=lstm,
            hyper=hyper,
        )
