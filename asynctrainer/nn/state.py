"""One save/restore of what an algorithm learns: variables, optimizer slots, the normaliser, its RNG.

PPO and SAC describe their state as a :class:`LearnedState` and get a checkpoint's arrays from
:meth:`LearnedState.save` and back with :meth:`LearnedState.restore`. Restoring checks every
array against the variable it goes to (present, same shape, finite) before assigning any, and
names the field that does not fit, so a checkpoint that verifies but holds the wrong contents is
refused with a :class:`~asynctrainer.errors.CheckpointLoadError`, never assigned halfway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asynctrainer.errors import CheckpointLoadError
from asynctrainer.nn.normalizer import Normalizer

__all__ = ["LearnedState"]

WEIGHTS = "weights"
OPTIMIZER = "optimizer"
NORMALIZER = "normalizer"
RNG = "rng"


@dataclass(frozen=True)
class LearnedState:
    """What one algorithm learns, by the names its checkpoint stores them under.

    :ivar behavior: the behavior, for messages.
    :ivar weights: network variables by stable name, stored as ``weights/<name>``; the only
        part a weights-only load (``--initialize-from``, ``init_path``) restores.
    :ivar variables: other learned variables (e.g. SAC's temperatures), stored under their name.
    :ivar optimizers: Keras optimizers by name, their slots stored as ``optimizer/<name>/<i>``
        (``optimizer/<i>`` for the name ``""``).
    :ivar normalizer: the observation normaliser, stored as ``normalizer/*``, or None.
    :ivar normalizers: other normalisers by name (e.g. a reward signal's), stored as ``normalizer/<name>/*``.
    :ivar rng: the algorithm's numpy generator (minibatch order, noise), stored as ``rng`` (JSON).
    """

    behavior: str
    weights: Mapping[str, Any]
    optimizers: Mapping[str, Any]
    normalizer: Normalizer | None
    rng: np.random.Generator
    variables: Mapping[str, Any] = field(default_factory=dict)
    normalizers: Mapping[str, Normalizer] = field(default_factory=dict)

    def _all_normalizers(self) -> dict[str, Normalizer]:
        """Every normaliser by its key prefix."""
        out = {f"{NORMALIZER}/{name}/": n for name, n in self.normalizers.items()}
        if self.normalizer is not None:
            out[f"{NORMALIZER}/"] = self.normalizer
        return out

    def _optimizer_variables(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, optimizer in self.optimizers.items():
            prefix = f"{OPTIMIZER}/{name}/" if name else f"{OPTIMIZER}/"
            out.update({f"{prefix}{i:03d}": v for i, v in enumerate(optimizer.variables)})
        return out

    def save(self) -> dict[str, np.ndarray]:
        """Every part as named numpy arrays (copies; no pickle)."""
        state = {f"{WEIGHTS}/{k}": np.array(v.numpy()) for k, v in self.weights.items()}
        state.update({k: np.array(v.numpy()) for k, v in self.variables.items()})
        state.update({k: np.array(v.numpy()) for k, v in self._optimizer_variables().items()})
        for prefix, normalizer in self._all_normalizers().items():
            state.update({f"{prefix}{k}": v for k, v in normalizer.state().items()})
        state[RNG] = np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), np.uint8).copy()
        return state

    def restore(self, state: Mapping[str, np.ndarray], *, weights_only: bool) -> None:
        """Assign the arrays of :meth:`save`; with ``weights_only`` the weights and nothing else.

        :raises CheckpointLoadError: naming the field that is missing, of another shape or not
            finite; nothing is assigned then.
        """
        assignments = [
            (var, self._checked(state, f"{WEIGHTS}/{name}", var, layer=name)) for name, var in self.weights.items()
        ]
        if weights_only:
            for var, value in assignments:
                var.assign(value)
            return
        assignments += [(var, self._checked(state, name, var)) for name, var in self.variables.items()]
        slots = self._optimizer_variables()
        stored = sorted(k for k in state if k.startswith(f"{OPTIMIZER}/"))
        if stored != sorted(slots):
            raise CheckpointLoadError(
                f"Behavior '{self.behavior}': the checkpoint has {len(stored)} optimizer variables, the trainer "
                f"{len(slots)} ({', '.join(sorted(set(stored) ^ set(slots))[:3])} differ); it was saved with "
                "other settings."
            )
        assignments += [(var, self._checked(state, name, var)) for name, var in slots.items()]
        loads = [(n, self._normalizer_state(state, prefix, n)) for prefix, n in self._all_normalizers().items()]
        rng_state = self._rng_state(state)
        for var, value in assignments:
            var.assign(value)
        for normalizer, loaded in loads:
            if loaded is not None:
                normalizer.load_state(loaded)
        self.rng.bit_generator.state = rng_state

    def _checked(self, state: Mapping[str, np.ndarray], key: str, var: Any, *, layer: str | None = None) -> np.ndarray:
        what = f"layer '{layer}'" if layer is not None else f"field '{key}'"
        if key not in state:
            raise CheckpointLoadError(f"Behavior '{self.behavior}': the checkpoint has no field '{key}'.")
        value = state[key]
        if tuple(value.shape) != tuple(var.shape):
            hint = (
                "the network settings (hidden_units, num_layers) or the env's spaces differ from the run that saved it"
                if layer is not None
                else "it was saved with other settings"
            )
            raise CheckpointLoadError(
                f"Behavior '{self.behavior}': {what} has shape {tuple(var.shape)} but the checkpoint has "
                f"{tuple(value.shape)} (field '{key}'); {hint}."
            )
        if value.dtype.kind not in "fiub":
            raise CheckpointLoadError(
                f"Behavior '{self.behavior}': field '{key}' holds {value.dtype} values; a number array is allowed."
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointLoadError(
                f"Behavior '{self.behavior}': field '{key}' holds {int((~np.isfinite(value)).sum())} NaN or "
                "infinite value(s); a checkpoint's learned values must be finite."
            )
        return value

    def _normalizer_state(
        self, state: Mapping[str, np.ndarray], prefix: str, normalizer: Normalizer
    ) -> dict[str, np.ndarray] | None:
        if f"{prefix}mean" not in state:
            return None
        current = normalizer.state()
        out: dict[str, np.ndarray] = {}
        for name, value in current.items():
            key = f"{prefix}{name}"
            if key not in state:
                raise CheckpointLoadError(f"Behavior '{self.behavior}': the checkpoint has no field '{key}'.")
            stored = state[key]
            if stored.shape != value.shape or stored.dtype.kind not in "fiu" or not np.isfinite(stored).all():
                raise CheckpointLoadError(
                    f"Behavior '{self.behavior}': field '{key}' holds {stored.dtype} of shape {stored.shape}; "
                    f"finite numbers of shape {value.shape} are allowed."
                )
            out[name] = stored
        if out["count"][0] < 0 or (out["m2"] < 0).any():
            raise CheckpointLoadError(
                f"Behavior '{self.behavior}': fields '{prefix}count' and '{prefix}m2' may not be negative."
            )
        return out

    def _rng_state(self, state: Mapping[str, np.ndarray]) -> Any:
        if RNG not in state:
            return self.rng.bit_generator.state
        try:
            decoded = json.loads(bytes(np.asarray(state[RNG], np.uint8)).decode("utf-8"))
            type(self.rng.bit_generator)().state = decoded  # a probe: the live generator is set last
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise CheckpointLoadError(
                f"Behavior '{self.behavior}': field '{RNG}' is not a generator state of this numpy version "
                f"(JSON of numpy's {type(self.rng.bit_generator).__name__} state is allowed): {exc}"
            ) from None
        return decoded
