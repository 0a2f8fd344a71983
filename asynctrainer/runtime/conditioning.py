"""Goal conditioning (``goal_conditioning_type: hyper``) in numpy: the snapshot's forward pass.

Observations of type ``goal_signal`` condition the policy through a hypernetwork, as ML-Agents'
``ConditionalEncoder`` does. The body's last hidden layer, of ``p`` inputs and ``u`` units, has
no weights of its own; a generator makes them from the goal ``g`` (the goal observations'
encoded values, which also stay among the ordinary inputs):

    z = LN(swish(W₂ · swish(W₁ · g)))        # two layers of u units, LN without parameters
    W(g) = reshape(W₃ · z, [p, u])            # row-major
    y = tanh(x · W(g) + b)                    # b: a learned bias of u, not generated

The TF network (:mod:`asynctrainer.nn.conditioning`) trains the same function and the ONNX
exporter writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.runtime.attention import layer_norm
from asynctrainer.runtime.encoders import Activation, Linear, Op, linear_from_arrays, output_shape, readonly_array

__all__ = ["Hyper", "goal_columns", "hyper_arrays", "hyper_from_arrays", "hyper_layer", "hyper_mismatch"]

F32 = npt.NDArray[np.float32]

_swish = Activation("swish")


class Hyper(NamedTuple):
    """The generator (module docstring): ``first`` ``[g, u]``, ``second`` ``[u, u]``, ``weights`` ``[u, p·u]``."""

    first: Linear
    second: Linear
    weights: Linear
    bias: F32

    @property
    def units(self) -> int:
        return int(self.bias.shape[0])


def goal_columns(spec: BehaviorSpec, encoders: Sequence[Sequence[Op] | None]) -> npt.NDArray[np.intp]:
    """The columns of the encoded row (:meth:`PolicySnapshot.encode`) that hold the goal observations."""
    columns: list[npt.NDArray[np.intp]] = []
    start = 0
    for o, ops in zip(spec.observation_specs, encoders or (None,) * len(spec.observation_specs), strict=True):
        if o.is_variable_length:
            continue
        width = o.size if ops is None else int(np.prod(output_shape(ops, o.shape)))
        if o.observation_type == "goal_signal":
            columns.append(np.arange(start, start + width, dtype=np.intp))
        start += width
    return np.concatenate(columns) if columns else np.zeros(0, np.intp)


def hyper_mismatch(hyper: Hyper, inputs: int, goal_size: int) -> str | None:
    """What does not fit in ``hyper`` for a layer of ``inputs`` and a goal of ``goal_size``; None when all fits."""
    u = hyper.units
    expected = {
        "first/kernel": (goal_size, u),
        "first/bias": (u,),
        "second/kernel": (u, u),
        "second/bias": (u,),
        "weights/kernel": (u, inputs * u),
        "weights/bias": (inputs * u,),
    }
    layers = {"first": hyper.first, "second": hyper.second, "weights": hyper.weights}
    for name, shape in expected.items():
        label, part = name.split("/")
        got = getattr(layers[label], part).shape
        if got != shape:
            return f"hyper/{name} has shape {got}, expected {shape} (inputs {inputs}, goal {goal_size}, units {u})"
    return None


def hyper_layer(hyper: Hyper, x: F32, goal: F32) -> F32:
    """``tanh(x · W(goal) + b)`` for a batch: ``x`` ``[B, p]``, ``goal`` ``[B, g]`` → ``[B, u]``."""
    z = layer_norm(_swish(hyper.second(_swish(hyper.first(goal)))))
    weights = hyper.weights(z).reshape(x.shape[0], x.shape[1], hyper.units)
    return np.tanh(np.einsum("bp,bpu->bu", x, weights) + hyper.bias).astype(np.float32)


def hyper_arrays(hyper: Hyper) -> dict[str, F32]:
    """The weights by name: ``hyper/<first|second|weights>/<kernel|bias>`` and ``hyper/bias``."""
    out: dict[str, F32] = {"hyper/bias": hyper.bias}
    for label, layer in (("first", hyper.first), ("second", hyper.second), ("weights", hyper.weights)):
        out[f"hyper/{label}/kernel"], out[f"hyper/{label}/bias"] = layer.kernel, layer.bias
    return out


def hyper_from_arrays(arrays: Mapping[str, Any]) -> Hyper | None:
    """Inverse of :func:`hyper_arrays` (read-only float32 copies); None when ``arrays`` has no hypernetwork."""
    if "hyper/bias" not in arrays:
        return None

    first, second, weights = (linear_from_arrays(arrays, f"hyper/{label}") for label in ("first", "second", "weights"))
    return Hyper(first, second, weights, readonly_array(arrays["hyper/bias"]))
