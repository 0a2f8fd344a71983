"""Entity embeddings and residual self-attention in Keras (what :mod:`asynctrainer.runtime.attention` computes).

The layout and its formulas are in :mod:`asynctrainer.runtime.attention`. Every Dense starts as
ML-Agents' do: normal with standard deviation ``√(0.125 / D)``, bias 0. :meth:`EntityAttention.snapshot`
copies the layers into the numpy :class:`~asynctrainer.runtime.attention.Attention` acting runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.runtime.attention import (
    EMBEDDING_SIZE,
    HEADS,
    NORM_EPSILON,
    PADDING_THRESHOLD,
    POOL_EPSILON,
    SCORE_PENALTY,
    Attention,
)
from asynctrainer.runtime.encoders import Linear

__all__ = ["EntityAttention", "SelfAttention", "layer_norm"]

Tensor = Any


def layer_norm(x: Tensor) -> Tensor:
    """Layer norm over the last axis without parameters (as :func:`asynctrainer.runtime.attention.layer_norm`)."""
    t = tf()
    mean, var = t.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * t.math.rsqrt(var + NORM_EPSILON)


class SelfAttention:
    """ML-Agents' residual self-attention: embedded entities ``[B, N, D]`` and their padding ``[B, N]``
    (1 = absent) → the mean over the present ones of ``LN(out(MHA(LN(e))) + LN(e))``, ``[B, D]``.

    Four heads; an absent entity gets a score of −10⁶ (:mod:`asynctrainer.runtime.attention` has
    the numpy twin and the formulas).

    :param dense: makes a Dense of ``size`` units from a label (``query``, ``key``, ``value``, ``out``).
    """

    def __init__(self, size: int, dense: Any) -> None:
        self.size = size
        self.query, self.key, self.value, self.out = (dense(x) for x in ("query", "key", "value", "out"))

    @property
    def layers(self) -> list[Any]:
        return [self.query, self.key, self.value, self.out]

    def __call__(self, entities: Tensor, padding: Tensor) -> Tensor:
        t = tf()
        x = layer_norm(entities)
        d, per_head = self.size, self.size // HEADS

        def heads(layer: Any) -> Tensor:
            y = layer(x)
            return t.transpose(t.reshape(y, [t.shape(y)[0], t.shape(y)[1], HEADS, per_head]), [0, 2, 1, 3])

        q, k, v = heads(self.query), heads(self.key), heads(self.value)
        scores = t.matmul(q, k, transpose_b=True) / math.sqrt(d)
        keys = padding[:, None, None, :]
        weights = t.nn.softmax((1.0 - keys) * scores - SCORE_PENALTY * keys, axis=-1)
        mixed = t.transpose(t.matmul(weights, v), [0, 2, 1, 3])
        mixed = t.reshape(mixed, [t.shape(x)[0], t.shape(x)[1], d])
        y = layer_norm(self.out(mixed) + x)
        present = 1.0 - padding
        return t.reduce_sum(y * present[:, :, None], axis=1) / (
            t.reduce_sum(present, axis=1, keepdims=True) + POOL_EPSILON
        )


class EntityAttention:
    """Variable-length observations → one ``[B, D]`` feature.

    :param self_size: width of the other encoded observations (0: no self embedding).
    :param entity_sizes: ``E`` of each variable-length observation, in spec order.
    """

    def __init__(self, self_size: int, entity_sizes: list[int], *, seed: int, name: str) -> None:
        keras = tf_keras()
        d = EMBEDDING_SIZE
        count = 0

        def dense(label: str) -> Any:
            nonlocal count
            count += 1
            init = keras.initializers.RandomNormal(stddev=math.sqrt(0.125 / d), seed=seed + count)
            return keras.layers.Dense(d, kernel_initializer=init, name=f"{name}_{label}")

        self.self_encoder = dense("self") if self_size else None
        self.entity_encoders = [dense(f"entity_{k}") for k in range(len(entity_sizes))]
        self.attention = SelfAttention(d, dense)
        s = np.zeros((1, self_size), np.float32) if self_size else None
        self(s, [np.zeros((1, 1, e), np.float32) for e in entity_sizes])

    @property
    def layers(self) -> list[Any]:
        """Every Dense, in the order of :attr:`variables` and :meth:`snapshot`."""
        head = [] if self.self_encoder is None else [self.self_encoder]
        return [*head, *self.entity_encoders, *self.attention.layers]

    def __call__(self, encoded_self: Tensor | None, entities: list[Tensor]) -> Tensor:
        t = tf()
        s = None
        if self.self_encoder is not None and encoded_self is not None:
            s = t.nn.silu(self.self_encoder(encoded_self))
        embedded, padding = [], []
        for encoder, x in zip(self.entity_encoders, entities, strict=True):
            x = t.convert_to_tensor(x, t.float32)
            if s is not None:
                n = t.shape(x)[1]
                x_in = t.concat([t.tile(s[:, None, :], [1, n, 1]), x], axis=2)
            else:
                x_in = x
            embedded.append(t.nn.silu(encoder(x_in)))
            padding.append(t.cast(t.reduce_sum(t.square(x), axis=2) < PADDING_THRESHOLD, t.float32))
        e = t.concat(embedded, axis=1) if len(embedded) > 1 else embedded[0]
        m = t.concat(padding, axis=1) if len(padding) > 1 else padding[0]
        return self.attention(e, m)

    @property
    def variables(self) -> list[Any]:
        return [v for layer in self.layers for v in (layer.kernel, layer.bias)]

    def named_variables(self) -> dict[str, Any]:
        return {f"{layer.name}/{part}": getattr(layer, part) for layer in self.layers for part in ("kernel", "bias")}

    def snapshot(self, values: list[np.ndarray]) -> Attention:
        """The numpy attention from the values of :attr:`variables`, consumed from the front of ``values``."""
        linears = [Linear(values.pop(0), values.pop(0)) for _ in self.layers]
        self_encoder = linears.pop(0) if self.self_encoder is not None else None
        entity = tuple(linears[: len(self.entity_encoders)])
        query, key, value, out = linears[len(self.entity_encoders) :]
        return Attention(self_encoder, entity, query, key, value, out)
