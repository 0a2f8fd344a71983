"""MA-POCA's centralised critic (Cohen et al. 2021, arXiv:2111.05992), as ML-Agents builds it.

One network gives both of POCA's estimates for an agent ``i`` of a group:

- the **value** ``V(s)``: every present agent's observations, agent ``i`` first;
- the **baseline** ``b_i(s, a_{-i})``: agent ``i``'s observations and its groupmates'
  observations *with their actions* (a counterfactual: ``i``'s own action is left out).

Each agent's observations pass one shared :class:`~asynctrainer.nn.encoders.ObservationEncoder`;
an entity is ``swish(W_o · enc)`` (observations only) or ``swish(W_oa · [enc, a])`` (with the
one-hot/continuous action ``a``), both initialised N(0, 0.125 / h). Residual self-attention over
the entities (:class:`~asynctrainer.nn.attention.SelfAttention`, absent agents masked) is mean-pooled,
then ``num_layers`` swish Dense of ``h`` units (Kaiming-normal × √(0.125 / h)), then the features
and ``n̂ = 2 · n_present / n_max − 1`` go to one linear head per reward signal. ``n_max`` is a
saved scalar: the most agents seen together, starting at 1.

A groupmate that is absent at a step is a row of NaN in the observations (ML-Agents' padding);
the mask is read from the first number of the row and the NaNs are zeroed before encoding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec
from asynctrainer.nn.attention import SelfAttention
from asynctrainer.nn.encoders import ObservationEncoder
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf

__all__ = ["GroupCritic", "flat_actions"]

Tensor = Any


class GroupCritic:
    """POCA's value and counterfactual baseline over a group (see the module docs).

    :param value_heads: one output per reward signal, in the trainer's order.
    """

    def __init__(
        self,
        spec: BehaviorSpec,
        *,
        hidden_units: int,
        num_layers: int,
        value_heads: int,
        vis_encode_type: str,
        seed: int,
    ) -> None:
        keras = tf_keras()
        h = hidden_units
        self.spec = spec
        a = spec.action_spec
        self.action_size = a.continuous_size + sum(a.discrete_branches)
        self.encoder = ObservationEncoder(
            spec, vis_encode_type=vis_encode_type, hidden_units=h, seed=seed + 600, name="poca_encoder"
        )
        count = 0

        def entity_dense(label: str) -> Any:
            nonlocal count
            count += 1
            init = keras.initializers.RandomNormal(stddev=math.sqrt(0.125 / h), seed=seed + 2000 + count)
            return keras.layers.Dense(h, kernel_initializer=init, name=f"poca_{label}")

        self.obs_entity = entity_dense("obs_entity")
        self.obs_action_entity = entity_dense("obs_action_entity")
        self.attention = SelfAttention(h, lambda label: entity_dense(f"attention_{label}"))
        self.body = [
            keras.layers.Dense(
                h,
                activation="silu",
                kernel_initializer=keras.initializers.VarianceScaling(
                    0.125 / h, "fan_in", "untruncated_normal", seed=seed + 2100 + i
                ),
                name=f"poca_body_{i}",
            )
            for i in range(num_layers)
        ]
        self.heads = keras.layers.Dense(
            value_heads, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2200), name="poca_value_heads"
        )
        #: The most agents seen together (n_max), saved with the weights.
        self.max_agents = keras.Variable(1.0, trainable=False, name="poca_max_agents")
        width = spec.observation_size
        obs = np.zeros((1, width), np.float32)
        mates = np.full((1, 1, width), np.nan, np.float32)
        self.value(obs, mates)
        self.baseline(obs, mates, np.zeros((1, 1, self.action_size), np.float32))

    # ----- forward ------------------------------------------------------------------------------

    def _encode(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, N, obs_size]`` with NaN rows → encodings ``[B, N, enc]`` and absence ``[B, N]`` (1 = absent)."""
        t = tf()
        absent = t.cast(t.math.is_nan(rows[:, :, 0]), t.float32)
        clean = t.where(t.math.is_nan(rows), t.zeros_like(rows), rows)
        b, n = t.shape(rows)[0], t.shape(rows)[1]
        encoded = self.encoder(t.reshape(clean, [b * n, self.spec.observation_size]))
        return t.reshape(encoded, [b, n, self.encoder.output_size]), absent

    def _heads(self, entities: Tensor, absent: Tensor) -> Tensor:
        t = tf()
        x = self.attention(entities, absent)
        for layer in self.body:
            x = layer(x)
        present = t.reduce_sum(1.0 - absent, axis=1, keepdims=True)
        scaled = 2.0 * present / t.cast(self.max_agents, t.float32) - 1.0
        return self.heads(t.concat([x, scaled], axis=1))

    def value(self, obs: Tensor, mates_obs: Tensor) -> Tensor:
        """``V``: the agent's ``[B, obs_size]`` and its groupmates' ``[B, M, obs_size]`` → ``[B, heads]``."""
        t = tf()
        rows = t.concat([t.convert_to_tensor(obs, t.float32)[:, None, :], t.convert_to_tensor(mates_obs)], axis=1)
        encoded, absent = self._encode(rows)
        return self._heads(t.nn.silu(self.obs_entity(encoded)), absent)

    def baseline(self, obs: Tensor, mates_obs: Tensor, mates_actions: Tensor) -> Tensor:
        """``b``: as :meth:`value`, the groupmates with their flat actions ``[B, M, action_size]``."""
        t = tf()
        own, _ = self._encode(t.convert_to_tensor(obs, t.float32)[:, None, :])
        mates, absent = self._encode(t.convert_to_tensor(mates_obs, t.float32))
        with_actions = t.nn.silu(self.obs_action_entity(t.concat([mates, mates_actions], axis=2)))
        entities = t.concat([with_actions, t.nn.silu(self.obs_entity(own))], axis=1)
        return self._heads(entities, t.concat([absent, t.zeros_like(absent[:, :1])], axis=1))

    # ----- variables ----------------------------------------------------------------------------

    @property
    def layers(self) -> list[Any]:
        return [self.obs_entity, self.obs_action_entity, *self.attention.layers, *self.body, self.heads]

    @property
    def trainable_variables(self) -> list[Any]:
        out: list[Any] = list(self.encoder.variables)
        for layer in self.layers:
            out += layer.trainable_weights
        return out

    def named_variables(self) -> dict[str, Any]:
        """By stable name: ``poca_encoder_…``, ``poca_<layer>/kernel`` and ``poca_max_agents``."""
        out: dict[str, Any] = dict(self.encoder.named_variables())
        for layer in self.layers:
            out[f"{layer.name}/kernel"] = layer.kernel
            out[f"{layer.name}/bias"] = layer.bias
        out["poca_max_agents"] = self.max_agents
        return out


def flat_actions(continuous: np.ndarray, discrete: np.ndarray, spec: ActionSpec) -> np.ndarray:
    """Actions ``[..., C]`` and ``[..., D]`` → ``[..., C + Σ branches]``: continuous as they are, each
    discrete branch one-hot (:meth:`ActionSpec.one_hot`; the critic's action input)."""
    lead = discrete.shape[:-1]
    rows = discrete.reshape(int(np.prod(lead)), discrete.shape[-1])  # works for 0 branches too
    hot = spec.one_hot(rows).reshape(*lead, spec.mask_size)
    return np.concatenate([continuous.astype(np.float32), hot], axis=-1)
