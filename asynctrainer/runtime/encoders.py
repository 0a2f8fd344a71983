"""Visual observation encoders as frozen numpy op lists: the snapshot's forward pass for images.

An encoder is a tuple of ops applied in order to a channel-last batch ``[B, H, W, C]``:
:class:`Conv` (kernel ``[kh, kw, C_in, C_out]``, as Keras stores it), :class:`Activation`,
:class:`MaxPool`, :class:`Residual` (``x + ops(x)``), :class:`Flatten` (row-major over
``H, W, C``, as Keras flattens) and :class:`~asynctrainer.runtime.snapshot.Dense`. The TF
networks (:mod:`asynctrainer.nn.encoders`) produce these lists from their layers, the
snapshot runs them here with numpy (convolutions as one matrix product over image patches),
and the ONNX exporter writes them as ONNX ops: one description of each encoder, three
interpreters that must agree (tests compare them).

The layouts are ML-Agents' (``vis_encode_type``); :data:`MIN_RESOLUTION` is the smallest
height and width each accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import SpecError

__all__ = [
    "MIN_RESOLUTION",
    "VIS_ENCODE_TYPES",
    "Activation",
    "Conv",
    "Flatten",
    "Linear",
    "MaxPool",
    "Op",
    "Residual",
    "check_resolution",
    "encoder_from_payload",
    "encoder_to_payload",
    "linear_from_arrays",
    "readonly_array",
    "run_encoder",
]

F32 = npt.NDArray[np.float32]

#: Smallest height and width of a visual observation each ML-Agents encoder accepts.
MIN_RESOLUTION: Mapping[str, int] = {"fully_connected": 1, "match3": 5, "simple": 20, "nature_cnn": 36, "resnet": 15}
VIS_ENCODE_TYPES = tuple(MIN_RESOLUTION)

ActivationName = Literal["leaky_relu", "relu", "swish"]
#: PyTorch's (and so ML-Agents') LeakyReLU slope; Keras' default is 0.3.
LEAKY_SLOPE = 0.01


def readonly_array(a: npt.ArrayLike) -> F32:
    """A read-only float32 copy of ``a`` (how snapshots hold every array)."""
    arr = np.array(a, dtype=np.float32, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Conv:
    """A 2-D convolution, channel-last, with symmetric zero ``padding`` on height and width."""

    kernel: F32
    bias: F32
    stride: int
    padding: int = 0
    #: The kernel as the patch matrix ``[C_in·kh·kw, C_out]`` (patches are ordered channel, row, column).
    matrix: F32 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        kh, kw, cin, cout = self.kernel.shape
        matrix = np.ascontiguousarray(self.kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout))
        matrix.setflags(write=False)
        object.__setattr__(self, "matrix", matrix)

    def __call__(self, x: F32) -> F32:
        p = self.padding
        if p:
            x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        kh, kw = self.kernel.shape[:2]
        s = self.stride
        patches = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::s, ::s]  # [B, Ho, Wo, C, kh, kw]
        b, ho, wo = patches.shape[:3]
        out = patches.reshape(b * ho * wo, -1) @ self.matrix
        out += self.bias
        return out.reshape(b, ho, wo, -1)


@dataclass(frozen=True)
class Activation:
    name: ActivationName

    def __call__(self, x: F32) -> F32:
        if self.name == "relu":
            return np.maximum(x, 0.0)
        if self.name == "leaky_relu":
            return np.where(x > 0, x, LEAKY_SLOPE * x).astype(np.float32)
        # swish(x) = x · sigmoid(x), written with tanh so large |x| cannot overflow exp.
        return (x * (0.5 + 0.5 * np.tanh(0.5 * x))).astype(np.float32)


@dataclass(frozen=True)
class MaxPool:
    """Max over ``size × size`` windows every ``stride`` pixels, without padding."""

    size: int
    stride: int

    def __call__(self, x: F32) -> F32:
        windows = sliding_window_view(x, (self.size, self.size), axis=(1, 2))[:, :: self.stride, :: self.stride]
        return windows.max(axis=(4, 5))


@dataclass(frozen=True)
class Flatten:
    def __call__(self, x: F32) -> F32:
        return x.reshape(x.shape[0], -1)


@dataclass(frozen=True, eq=False)
class Linear:
    kernel: F32
    bias: F32

    def __call__(self, x: F32) -> F32:
        out = x @ self.kernel
        out += self.bias
        return out


@dataclass(frozen=True)
class Residual:
    """``x + ops(x)`` (ResNet's block)."""

    ops: tuple[Op, ...]

    def __call__(self, x: F32) -> F32:
        return x + run_encoder(self.ops, x)


Op = Conv | Activation | MaxPool | Flatten | Linear | Residual


def run_encoder(ops: Sequence[Op], x: F32) -> F32:
    """Apply ``ops`` in order to ``x`` (``[B, H, W, C]`` for a visual encoder)."""
    for op in ops:
        x = op(x)
    return x


def output_shape(ops: Sequence[Op], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape (without batch) ``ops`` produce from an input of ``shape``: a 1-pixel probe."""
    return run_encoder(ops, np.zeros((1, *shape), np.float32)).shape[1:]


def check_resolution(behavior_name: str, spec: BehaviorSpec, vis_encode_type: str) -> None:
    """Raise :class:`SpecError` for a visual observation smaller than ``vis_encode_type`` accepts."""
    minimum = MIN_RESOLUTION[vis_encode_type]
    for i, o in enumerate(spec.observation_specs):
        if o.is_visual and min(o.shape[0], o.shape[1]) < minimum:
            name = f"'{o.name}'" if o.name else f"#{i}"
            smaller = ", ".join(f"{k} {v}" for k, v in MIN_RESOLUTION.items() if v <= min(o.shape[:2]))
            raise SpecError(
                f"Behavior '{behavior_name}': visual observation {name} is {o.shape[0]}x{o.shape[1]} (height x width), "
                f"too small for vis_encode_type '{vis_encode_type}', which needs at least {minimum}x{minimum}. "
                f"Use a larger sensor or an encoder that accepts it ({smaller})."
            )


# ----- plain data (snapshot payloads) -----------------------------------------------------------


def encoder_to_payload(ops: Sequence[Op], prefix: str) -> tuple[list[dict[str, Any]], dict[str, F32]]:
    """``ops`` as a JSON-able structure and arrays named ``<prefix>/<index>/kernel|bias``."""
    layout: list[dict[str, Any]] = []
    arrays: dict[str, F32] = {}
    for i, op in enumerate(ops):
        name = f"{prefix}/{i}"
        if isinstance(op, Conv):
            layout.append({"op": "conv", "stride": op.stride, "padding": op.padding})
            arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = op.kernel, op.bias
        elif isinstance(op, Linear):
            layout.append({"op": "linear"})
            arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = op.kernel, op.bias
        elif isinstance(op, Activation):
            layout.append({"op": "activation", "name": op.name})
        elif isinstance(op, MaxPool):
            layout.append({"op": "max_pool", "size": op.size, "stride": op.stride})
        elif isinstance(op, Flatten):
            layout.append({"op": "flatten"})
        else:
            inner, inner_arrays = encoder_to_payload(op.ops, name)
            layout.append({"op": "residual", "ops": inner})
            arrays.update(inner_arrays)
    return layout, arrays


def linear_from_arrays(arrays: Mapping[str, Any], prefix: str) -> Linear:
    """A read-only :class:`Linear` from the arrays ``<prefix>/kernel`` and ``<prefix>/bias``."""
    return Linear(readonly_array(arrays[f"{prefix}/kernel"]), readonly_array(arrays[f"{prefix}/bias"]))


def encoder_from_payload(layout: Iterable[Mapping[str, Any]], arrays: Mapping[str, Any], prefix: str) -> tuple[Op, ...]:
    """Inverse of :func:`encoder_to_payload` (copies the arrays read-only)."""
    ops: list[Op] = []
    for i, entry in enumerate(layout):
        name = f"{prefix}/{i}"
        kind = entry["op"]
        if kind == "conv":
            ops.append(
                Conv(
                    readonly_array(arrays[f"{name}/kernel"]),
                    readonly_array(arrays[f"{name}/bias"]),
                    int(entry["stride"]),
                    int(entry["padding"]),
                )
            )
        elif kind == "linear":
            ops.append(linear_from_arrays(arrays, name))
        elif kind == "activation":
            ops.append(Activation(entry["name"]))
        elif kind == "max_pool":
            ops.append(MaxPool(int(entry["size"]), int(entry["stride"])))
        elif kind == "flatten":
            ops.append(Flatten())
        elif kind == "residual":
            ops.append(Residual(encoder_from_payload(entry["ops"], arrays, name)))
        else:
            raise SpecError(
                f"A snapshot encoder has the unknown op {kind!r}; "
                "known: conv, linear, activation, max_pool, flatten, residual."
            )
    return tuple(ops)


def readonly_ops(ops: Sequence[Op]) -> tuple[Op, ...]:
    """``ops`` with every array copied read-only (how a snapshot holds them)."""
    layout, arrays = encoder_to_payload(ops, "e")
    return encoder_from_payload(layout, arrays, "e")
