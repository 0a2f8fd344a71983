"""Attention over variable-length observations (Unity's buffer sensor), in numpy: the snapshot's forward pass.

A variable-length observation is ``[N_max, E]``: up to ``N_max`` entities of ``E`` values, the
unused ones zero. ML-Agents' layout, with ``D`` = :data:`EMBEDDING_SIZE` (128 whatever
``hidden_units`` is):

1. **Mask.** An entity is padding (``m = 1``) when ``Σ x² < 0.01``.
2. **Self.** ``s = swish(W_s · concat(every other encoded observation))``, ``[B, D]``; absent when
   the agent has no other observation.
3. **Entity embedding**, one per variable-length observation: ``e = swish(W_e · [s, x])`` for
   each entity ``x`` (``swish(W_e · x)`` without ``s``). All observations' embeddings and masks
   are joined along the entity axis.
4. **Residual self-attention** with :data:`HEADS` heads of ``D / HEADS``: ``x ← LN(e)``;
   ``Q, K, V`` are linear maps of ``x``; per head the scores ``Q Kᵀ / √D`` (scaled by the whole
   embedding, as ML-Agents does) become ``(1 − m)·score − 10⁶·m`` for padding keys, then a softmax
   over keys weights ``V``; ``y = LN(W_o · heads + x)``.
5. **Pooling.** ``Σ_n y_n (1 − m_n) / (Σ_n (1 − m_n) + 1e-7)``, ``[B, D]``, appended after the
   other encoded observations.

``LN`` is a layer norm without parameters (``ε = 1e-5``). The TF network
(:mod:`asynctrainer.nn.attention`) trains the same function and the ONNX exporter writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from asynctrainer.runtime.encoders import Activation, Linear, linear_from_arrays

__all__ = [
    "EMBEDDING_SIZE",
    "HEADS",
    "Attention",
    "attend",
    "attention_arrays",
    "attention_from_arrays",
    "entity_padding",
    "layer_norm",
]

F32 = npt.NDArray[np.float32]

#: ML-Agents' attention embedding size (fixed).
EMBEDDING_SIZE = 128
#: Heads of the residual self-attention.
HEADS = 4
#: An entity whose squared values sum below this is padding.
PADDING_THRESHOLD = 0.01
#: Added (negated) to the attention scores of padding entities.
SCORE_PENALTY = 1e6
#: Layer norm's variance epsilon, and the pooling's denominator epsilon.
NORM_EPSILON = 1e-5
POOL_EPSILON = 1e-7

_swish = Activation("swish")


class Attention(NamedTuple):
    """The weights of step 2–4 (module docstring); every kernel is ``[inputs, D]``."""

    self_encoder: Linear | None
    #: One per variable-length observation, in spec order: kernel ``[D + E, D]`` (``[E, D]`` without self).
    entity_encoders: tuple[Linear, ...]
    query: Linear
    key: Linear
    value: Linear
    out: Linear


def attention_arrays(attention: Attention) -> dict[str, F32]:
    """The weights by name: ``attention/<self|entity_k|query|key|value|out>/<kernel|bias>``."""
    named: list[tuple[str, Linear]] = [] if attention.self_encoder is None else [("self", attention.self_encoder)]
    named += [(f"entity_{k}", e) for k, e in enumerate(attention.entity_encoders)]
    named += [("query", attention.query), ("key", attention.key), ("value", attention.value), ("out", attention.out)]
    out: dict[str, F32] = {}
    for label, layer in named:
        out[f"attention/{label}/kernel"], out[f"attention/{label}/bias"] = layer.kernel, layer.bias
    return out


def attention_from_arrays(arrays: Mapping[str, Any]) -> Attention | None:
    """Inverse of :func:`attention_arrays` (read-only float32 copies); None when ``arrays`` has no attention."""
    if "attention/query/kernel" not in arrays:
        return None

    def layer(label: str) -> Linear:
        return linear_from_arrays(arrays, f"attention/{label}")

    count = sum(1 for k in arrays if k.startswith("attention/entity_") and k.endswith("/kernel"))
    return Attention(
        layer("self") if "attention/self/kernel" in arrays else None,
        tuple(layer(f"entity_{k}") for k in range(count)),
        layer("query"),
        layer("key"),
        layer("value"),
        layer("out"),
    )


def entity_padding(entities: F32) -> F32:
    """``[B, N, E]`` → ``[B, N]``: 1.0 for a padding entity, 0.0 for a present one."""
    return (np.square(entities).sum(axis=2) < PADDING_THRESHOLD).astype(np.float32)


def layer_norm(x: F32) -> F32:
    """``(x − mean) / √(var + ε)`` over the last axis, no scale or offset."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    return (centred / np.sqrt(np.square(centred).mean(axis=-1, keepdims=True) + NORM_EPSILON)).astype(np.float32)


def _softmax(x: F32) -> F32:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def attend(attention: Attention, encoded_self: F32 | None, entities: Sequence[F32]) -> F32:
    """The pooled attention output ``[B, D]``.

    :param encoded_self: the other observations, encoded and concatenated, ``[B, width]`` (None when
        there are none; the attention then has no self encoder).
    :param entities: each variable-length observation ``[B, N_k, E_k]``, in spec order.
    """
    s = None if encoded_self is None or attention.self_encoder is None else _swish(attention.self_encoder(encoded_self))
    embedded, padding = [], []
    for encoder, x in zip(attention.entity_encoders, entities, strict=True):
        b, n, _ = x.shape
        inputs = x if s is None else np.concatenate([np.broadcast_to(s[:, None, :], (b, n, s.shape[1])), x], axis=2)
        embedded.append(_swish(encoder(inputs.reshape(b * n, -1)).reshape(b, n, -1)))
        padding.append(entity_padding(x))
    e, m = np.concatenate(embedded, axis=1), np.concatenate(padding, axis=1)
    b, n, d = e.shape
    x = layer_norm(e)
    flat = x.reshape(b * n, d)
    per_head = d // HEADS

    def heads(layer: Linear) -> F32:
        return layer(flat).reshape(b, n, HEADS, per_head).transpose(0, 2, 1, 3)  # [B, H, N, d/H]

    q, k, v = heads(attention.query), heads(attention.key), heads(attention.value)
    scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d))  # [B, H, N, N]
    keys = m[:, None, None, :]
    weights = _softmax((1.0 - keys) * scores - SCORE_PENALTY * keys)
    mixed = (weights @ v).transpose(0, 2, 1, 3).reshape(b * n, d)
    y = layer_norm(attention.out(mixed).reshape(b, n, d) + x)
    present = 1.0 - m
    return ((y * present[:, :, None]).sum(axis=1) / (present.sum(axis=1, keepdims=True) + POOL_EPSILON)).astype(
        np.float32
    )
