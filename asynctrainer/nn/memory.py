"""Recurrent memory (``network_settings.memory``): one LSTM layer after a network's dense body.

The layer computes, per step, ``z = x K + h R + b`` split into the gates input, forget, cell and
output (``i, f, g, o``); ``c' = σ(f) c + σ(i) tanh(g)`` and ``h' = σ(o) tanh(c')``. An agent's
memory is ``[h | c]``, ``memory_size = 2u`` wide, as ML-Agents keeps it. The same step runs in
numpy for acting (:func:`asynctrainer.runtime.snapshot.lstm_step`) and as ONNX ops in export.

Initialisation as ML-Agents': Glorot-uniform per gate block of both kernels, bias 0 except the
forget block, 2.0 (PyTorch's two biases each get +1).

Sequences: a batch of ``B`` sequences of ``T`` steps is ``[B·T, features]`` rows, sequence by
sequence; :meth:`LSTMLayer.sequences` reshapes it, runs the steps from each sequence's initial
memory ``[B, 2u]`` and returns the rows' outputs and memories.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf

__all__ = ["FORGET_BIAS", "LSTMLayer"]

Tensor = Any
#: The forget gate's initial bias (ML-Agents' effective value).
FORGET_BIAS = 2.0


def _glorot_blocks(rng: np.random.Generator, rows: int, units: int) -> np.ndarray:
    limit = math.sqrt(6.0 / (rows + units))
    return np.concatenate([rng.uniform(-limit, limit, (rows, units)) for _ in range(4)], axis=1).astype(np.float32)


class LSTMLayer:
    """An LSTM of ``memory_size // 2`` units on ``inputs``-wide rows; its variables are named ``<name>/...``."""

    def __init__(self, inputs: int, memory_size: int, *, seed: int, name: str) -> None:
        keras = tf_keras()
        self.name = name
        self.units = memory_size // 2
        self.memory_size = memory_size
        rng = np.random.default_rng(seed)
        bias = np.zeros(4 * self.units, np.float32)
        bias[self.units : 2 * self.units] = FORGET_BIAS
        self.kernel = keras.Variable(_glorot_blocks(rng, inputs, self.units), name=f"{name}_kernel")
        self.recurrent_kernel = keras.Variable(
            _glorot_blocks(rng, self.units, self.units), name=f"{name}_recurrent_kernel"
        )
        self.bias = keras.Variable(bias, name=f"{name}_bias")

    @property
    def variables(self) -> list[Any]:
        """``kernel``, ``recurrent_kernel``, ``bias``: the order a snapshot's ``LSTM`` takes them in."""
        return [self.kernel, self.recurrent_kernel, self.bias]

    def named_variables(self) -> dict[str, Any]:
        names = ("kernel", "recurrent_kernel", "bias")
        return {f"{self.name}/{k}": v for k, v in zip(names, self.variables, strict=True)}

    def step(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """One step for a batch: output ``[B, u]`` and new memory ``[B, 2u]``."""
        t = tf()
        u = self.units
        h, c = memory[:, :u], memory[:, u:]
        z = t.matmul(x, self.kernel) + t.matmul(h, self.recurrent_kernel) + self.bias
        i, f, g, o = t.split(z, 4, axis=1)
        c_new = t.sigmoid(f) * c + t.sigmoid(i) * t.tanh(g)
        h_new = t.sigmoid(o) * t.tanh(c_new)
        return h_new, t.concat([h_new, c_new], axis=1)

    def sequences(self, rows: Tensor, initial: Tensor, length: int | None = None) -> tuple[Tensor, Tensor]:
        """Run ``B`` sequences laid out as rows ``[B·T, d]`` from memories ``initial`` ``[B, 2u]``.

        One fused TensorFlow kernel runs every step (``BlockLSTM``, no peepholes, no forget bias
        of its own), and one its gradient: a loop of per-step ops costs about a thousand small
        kernels per training sequence. ``BlockLSTM`` wants the gates in the order input, cell,
        forget, output, so the blocks are reordered on the way in. (``BlockLSTMV2`` takes this
        layer's order, but TensorFlow's gradient of it does not match its forward pass.)

        :param length: ``T`` when known while tracing (else it is inferred from the rows).
        :returns: each row's output ``[B·T, u]`` and the memory after it ``[B·T, 2u]``.
        """
        t = tf()
        u = self.units
        b = t.shape(initial)[0]
        steps = t.transpose(t.reshape(rows, [b, -1 if length is None else length, rows.shape[-1]]), [1, 0, 2])

        def icfo(w: Tensor) -> Tensor:
            i, f, g, o = t.split(w, 4, axis=-1)
            return t.concat([i, g, f, o], axis=-1)

        no_peephole = t.zeros([u], t.float32)
        _, cs, _, _, _, _, h = t.raw_ops.BlockLSTM(
            seq_len_max=t.cast(t.shape(steps)[0], t.int64),
            x=steps,
            cs_prev=initial[:, u:],
            h_prev=initial[:, :u],
            w=icfo(t.concat([self.kernel, self.recurrent_kernel], axis=0)),
            wci=no_peephole,
            wcf=no_peephole,
            wco=no_peephole,
            b=icfo(self.bias),
            forget_bias=0.0,
            use_peephole=False,
        )
        out = t.reshape(t.transpose(h, [1, 0, 2]), [-1, u])
        memories = t.reshape(t.transpose(t.concat([h, cs], axis=2), [1, 0, 2]), [-1, 2 * u])
        return out, memories
