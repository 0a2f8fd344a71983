"""Observation encoders in Keras: vector observations as they are, visual ones through ML-Agents' CNNs.

Networks take the flat observation row the trajectories store (every observation flattened and
concatenated in spec order). :class:`ObservationEncoder` cuts it back into observations,
passes each vector observation through unchanged (the trainer has normalised it) and each
visual one, reshaped to ``[B, H, W, C]``, through the encoder ``vis_encode_type`` names, and
concatenates the results in spec order (ML-Agents' ``ObservationEncoder``). Variable-length
observations go through :class:`~asynctrainer.nn.attention.EntityAttention`, whose output is
appended last. A spec with vector observations only has no variables and returns its input.

Layouts (ML-Agents' ``vis_encode_type``; LReLU has slope 0.01): ``simple`` Conv16 k8 s4, Conv32
k4 s2; ``nature_cnn`` Conv32 k8 s4, Conv64 k4 s2, Conv64 k3 s1; ``match3`` Conv35 k3, Conv144 k3
(each conv followed by LReLU); ``resnet`` for 16, 32, 32 channels Conv k3 (same padding), MaxPool
k3 s2, two blocks ``x + Conv(swish(Conv(swish(x))))``, then swish; ``fully_connected`` nothing
before the flatten. Then flatten and Dense ``hidden_units`` with LReLU (ReLU for resnet).
Convolutions start as PyTorch's do (uniform ``±1/√fan_in``), the last Dense as Kaiming-normal
with gain 1.41 — the initialisations ML-Agents' encoders have.

:meth:`ObservationEncoder.snapshot_ops` copies each visual encoder into the numpy op list of
:mod:`asynctrainer.runtime.encoders`, which acting and ONNX export run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from asynctrainer.envs.spec import BehaviorSpec, ObservationSpec
from asynctrainer.errors import SpecError
from asynctrainer.nn.attention import EntityAttention
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.runtime import encoders as np_ops
from asynctrainer.runtime.attention import Attention
from asynctrainer.runtime.encoders import MIN_RESOLUTION

__all__ = ["ObservationEncoder"]

Tensor = Any

#: Gain of the encoders' last Dense (ML-Agents' ``KaimingHeNormal`` with gain 1.41).
DENSE_GAIN = 1.41


@dataclass
class _Layer:
    """One step of a visual encoder: a Keras layer (or None) and the numpy op it snapshots to."""

    kind: str  # conv | linear | activation | max_pool | flatten | residual
    layer: Any = None
    activation: str = ""
    stride: int = 1
    padding: int = 0
    size: int = 0
    inner: tuple[_Layer, ...] = ()


class _Builder:
    """Creates the Keras layers of one visual encoder with seeded initialisers."""

    def __init__(self, name: str, seed: int) -> None:
        self.keras = tf_keras()
        self.name = name
        self.seed = seed
        self.count = 0

    def _next(self) -> tuple[str, int]:
        self.count += 1
        return f"{self.name}_{self.count}", self.seed + self.count

    def conv(self, filters: int, kernel: int, stride: int, in_channels: int, padding: int = 0) -> _Layer:
        keras = self.keras
        name, seed = self._next()
        bound = 1.0 / math.sqrt(in_channels * kernel * kernel)
        layer = keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same" if padding else "valid",
            kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed + 10_000),
            name=name,
        )
        return _Layer("conv", layer, stride=stride, padding=padding)

    def dense(self, units: int) -> _Layer:
        keras = self.keras
        name, seed = self._next()
        init = keras.initializers.VarianceScaling(DENSE_GAIN**2, "fan_in", "untruncated_normal", seed=seed)
        return _Layer("linear", keras.layers.Dense(units, kernel_initializer=init, name=name))


def _act(name: str) -> _Layer:
    return _Layer("activation", activation=name)


def _visual_layers(kind: str, channels: int, hidden_units: int, builder: _Builder) -> tuple[_Layer, ...]:
    lrelu = _act("leaky_relu")
    if kind == "fully_connected":
        return (_Layer("flatten"), builder.dense(hidden_units), lrelu)
    if kind == "resnet":
        layers: list[_Layer] = []
        c_in = channels
        for c in (16, 32, 32):
            layers += [builder.conv(c, 3, 1, c_in, padding=1), _Layer("max_pool", size=3, stride=2)]
            for _ in range(2):
                block = (_act("swish"), builder.conv(c, 3, 1, c, 1), _act("swish"), builder.conv(c, 3, 1, c, 1))
                layers.append(_Layer("residual", inner=block))
            c_in = c
        return (*layers, _act("swish"), _Layer("flatten"), builder.dense(hidden_units), _act("relu"))
    convs = {
        "simple": ((16, 8, 4), (32, 4, 2)),
        "nature_cnn": ((32, 8, 4), (64, 4, 2), (64, 3, 1)),
        "match3": ((35, 3, 1), (144, 3, 1)),
    }[kind]
    layers = []
    c_in = channels
    for filters, k, s in convs:
        layers += [builder.conv(filters, k, s, c_in), lrelu]
        c_in = filters
    return (*layers, _Layer("flatten"), builder.dense(hidden_units), lrelu)


def _apply(layers: tuple[_Layer, ...], x: Tensor) -> Tensor:
    t = tf()
    for step in layers:
        if step.kind in ("conv", "linear"):
            x = step.layer(x)
        elif step.kind == "activation":
            if step.activation == "relu":
                x = t.nn.relu(x)
            elif step.activation == "leaky_relu":
                x = t.nn.leaky_relu(x, alpha=np_ops.LEAKY_SLOPE)
            else:
                x = t.nn.silu(x)
        elif step.kind == "max_pool":
            x = t.nn.max_pool2d(x, step.size, step.stride, "VALID")
        elif step.kind == "flatten":
            x = t.reshape(x, [t.shape(x)[0], -1])
        else:
            x = x + _apply(step.inner, x)
    return x


def _flat(layers: tuple[_Layer, ...]) -> list[_Layer]:
    """The steps with weights, depth first (the order of :func:`_variables` and :func:`_to_ops`)."""
    out: list[_Layer] = []
    for step in layers:
        if step.layer is not None:
            out.append(step)
        out += _flat(step.inner)
    return out


def _variables(layers: tuple[_Layer, ...]) -> list[Any]:
    return [v for step in _flat(layers) for v in (step.layer.kernel, step.layer.bias)]


def _to_ops(layers: tuple[_Layer, ...], values: list[np.ndarray]) -> tuple[np_ops.Op, ...]:
    """The numpy ops of ``layers``, consuming their kernel and bias values from ``values`` in order."""
    ops: list[np_ops.Op] = []
    for step in layers:
        if step.kind == "conv":
            kernel, bias = values.pop(0), values.pop(0)
            ops.append(np_ops.Conv(kernel, bias, step.stride, step.padding))
        elif step.kind == "linear":
            kernel, bias = values.pop(0), values.pop(0)
            ops.append(np_ops.Linear(kernel, bias))
        elif step.kind == "activation":
            ops.append(np_ops.Activation(step.activation))  # type: ignore[arg-type]
        elif step.kind == "max_pool":
            ops.append(np_ops.MaxPool(step.size, step.stride))
        elif step.kind == "flatten":
            ops.append(np_ops.Flatten())
        else:
            ops.append(np_ops.Residual(_to_ops(step.inner, values)))
    return np_ops.readonly_ops(ops)


class ObservationEncoder:
    """Flat observation rows ``[B, obs_size]`` → encoded features ``[B, output_size]``.

    :param name: prefix of the layer names (``<name>_visual_<i>_<k>``), unique per network.
    """

    def __init__(self, spec: BehaviorSpec, *, vis_encode_type: str, hidden_units: int, seed: int, name: str) -> None:
        if vis_encode_type not in MIN_RESOLUTION:
            raise SpecError(f"vis_encode_type '{vis_encode_type}' is not one of {', '.join(MIN_RESOLUTION)}.")
        self.spec = spec
        self._parts: list[tuple[int, ObservationSpec, tuple[_Layer, ...] | None]] = []
        self._entities: list[tuple[int, ObservationSpec]] = []
        self._per_observation: list[tuple[_Layer, ...] | None] = []  # each observation's visual encoder
        start = self_size = 0
        for i, o in enumerate(spec.observation_specs):
            if o.is_variable_length:
                if len(o.shape) != 2:
                    raise SpecError(
                        f"Observation {i} ('{o.name}') is variable-length with shape {o.shape}; "
                        "a variable-length observation is (max_entities, entity_size)."
                    )
                self._entities.append((start, o))
                self._per_observation.append(None)
                start += o.size
                continue
            layers = None
            if o.is_visual:
                builder = _Builder(f"{name}_visual_{i}", seed + 1000 * (i + 1))
                layers = _visual_layers(vis_encode_type, o.shape[2], hidden_units, builder)
            self._parts.append((start, o, layers))
            self._per_observation.append(layers)
            self_size += o.size if layers is None else hidden_units
            start += o.size
        self.attention = (
            EntityAttention(
                self_size, [o.shape[1] for _, o in self._entities], seed=seed + 900, name=f"{name}_attention"
            )
            if self._entities
            else None
        )
        self.is_identity = self.attention is None and all(layers is None for _, _, layers in self._parts)
        columns: list[int] = []
        width = 0  # where the goal observations are in the output
        for _, o, layers in self._parts:
            size = o.size if layers is None else hidden_units
            if o.observation_type == "goal_signal":
                columns += range(width, width + size)
            width += size
        self.goal_columns = np.array(columns, np.int32)
        self.output_size = int(self(np.zeros((1, spec.observation_size), np.float32)).shape[1])

    def __call__(self, obs: Tensor) -> Tensor:
        if self.is_identity:
            return obs
        t = tf()
        outs = []
        for start, o, layers in self._parts:
            x = obs[:, start : start + o.size]
            if layers is not None:
                x = _apply(layers, t.reshape(x, [-1, *o.shape]))
            outs.append(x)
        if self.attention is not None:  # ML-Agents appends the attention's output after the others
            encoded_self = None if not outs else outs[0] if len(outs) == 1 else t.concat(outs, axis=1)
            entities = [t.reshape(obs[:, start : start + o.size], [-1, *o.shape]) for start, o in self._entities]
            outs.append(self.attention(encoded_self, entities))
        return outs[0] if len(outs) == 1 else t.concat(outs, axis=1)

    def goals(self, encoded: Tensor) -> Tensor:
        """The goal observations' columns of this encoder's output (goal conditioning's input)."""
        return tf().gather(encoded, self.goal_columns, axis=1)

    @property
    def variables(self) -> list[Any]:
        """Kernel and bias of every layer, observation by observation, then the attention's
        (the order :meth:`snapshot_ops` reads)."""
        out = [v for _, _, layers in self._parts if layers is not None for v in _variables(layers)]
        return out + ([] if self.attention is None else self.attention.variables)

    def named_variables(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _, _, layers in self._parts:
            for step in _flat(layers or ()):
                out[f"{step.layer.name}/kernel"] = step.layer.kernel
                out[f"{step.layer.name}/bias"] = step.layer.bias
        if self.attention is not None:
            out.update(self.attention.named_variables())
        return out

    def snapshot_ops(
        self, values: list[np.ndarray]
    ) -> tuple[tuple[tuple[np_ops.Op, ...] | None, ...], Attention | None]:
        """Per observation its numpy encoder (None for a vector or variable-length one), and the attention.

        Consumes the values of :attr:`variables` from the front of ``values``. The encoders are
        empty for a vector-only spec.
        """
        if self.is_identity:
            return (), None
        encoders = tuple(None if layers is None else _to_ops(layers, values) for layers in self._per_observation)
        return encoders, None if self.attention is None else self.attention.snapshot(values)
