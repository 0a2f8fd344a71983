"""The hypernetwork layer of goal conditioning in Keras (what :mod:`asynctrainer.runtime.conditioning` computes).

Initialisation as ML-Agents': the generator's two hidden layers Kaiming-normal (gain 1), its
output layer uniform in ``±√(1 / (u·p))`` with bias 0, the layer's own bias 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asynctrainer.nn.attention import layer_norm
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.runtime.conditioning import Hyper
from asynctrainer.runtime.encoders import Linear

__all__ = ["HyperLayer"]

Tensor = Any


class HyperLayer:
    """``tanh(x · W(goal) + b)``: a dense layer of ``units`` whose ``[inputs, units]`` kernel the goal generates."""

    def __init__(self, inputs: int, goal_size: int, units: int, *, seed: int, name: str) -> None:
        keras = tf_keras()
        kaiming = keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal", seed=seed)
        self.inputs, self.units = inputs, units
        self.first = keras.layers.Dense(units, kernel_initializer=kaiming, name=f"{name}_first")
        kaiming2 = keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal", seed=seed + 1)
        self.second = keras.layers.Dense(units, kernel_initializer=kaiming2, name=f"{name}_second")
        bound = math.sqrt(1.0 / (units * inputs))
        self.weights = keras.layers.Dense(
            inputs * units,
            kernel_initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed + 2),
            name=f"{name}_weights",
        )
        self.bias = keras.Variable(np.zeros(units, np.float32), name=f"{name}_bias")
        self.name = name
        self(np.zeros((1, inputs), np.float32), np.zeros((1, goal_size), np.float32))

    def __call__(self, x: Tensor, goal: Tensor) -> Tensor:
        t = tf()
        z = layer_norm(t.nn.silu(self.second(t.nn.silu(self.first(goal)))))
        weights = t.reshape(self.weights(z), [-1, self.inputs, self.units])
        return t.tanh(t.einsum("bp,bpu->bu", x, weights) + self.bias)

    @property
    def variables(self) -> list[Any]:
        """In the order :meth:`snapshot` reads."""
        return [v for layer in (self.first, self.second, self.weights) for v in (layer.kernel, layer.bias)] + [
            self.bias
        ]

    def named_variables(self) -> dict[str, Any]:
        out = {
            f"{layer.name}/{p}": getattr(layer, p)
            for layer in (self.first, self.second, self.weights)
            for p in ("kernel", "bias")
        }
        out[f"{self.name}_bias"] = self.bias
        return out

    def snapshot(self, values: list[np.ndarray]) -> Hyper:
        """The numpy layer from the values of :attr:`variables`, consumed from the front of ``values``."""
        first, second, weights = (Linear(values.pop(0), values.pop(0)) for _ in range(3))
        return Hyper(first, second, weights, values.pop(0))
