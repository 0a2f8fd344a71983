"""Immutable numpy copies of a policy, used for acting on the event loop.

A snapshot is built on the update thread from the trainer's variables and is never
mutated afterwards; its arrays are read-only. ``act`` runs the actor's forward pass in
numpy (dense layers as ``x @ W + b``), so no TensorFlow op ever runs on the loop thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import SpecError
from asynctrainer.runtime.attention import Attention, attend, attention_arrays, attention_from_arrays
from asynctrainer.runtime.conditioning import (
    Hyper,
    goal_columns,
    hyper_arrays,
    hyper_from_arrays,
    hyper_layer,
    hyper_mismatch,
)
from asynctrainer.runtime.encoders import (
    Op,
    encoder_from_payload,
    encoder_to_payload,
    output_shape,
    readonly_array,
    readonly_ops,
    run_encoder,
)

__all__ = [
    "LSTM",
    "ActOutput",
    "Dense",
    "ImageEncoder",
    "PolicySnapshot",
    "flatten_obs",
    "lstm_mismatch",
    "lstm_step",
]

F32 = npt.NDArray[np.float32]

#: Continuous samples are clipped to this many standard units, then divided by it, so the
#: env sees [-1, 1] (ML-Agents' action clipping, also in its ONNX export).
CONTINUOUS_CLIP = 3.0
#: Added to masked logits (negated); the same constant ML-Agents' export uses.
MASK_PENALTY = 1e8
LOG_2PI = float(np.log(2.0 * np.pi))
#: The encoding of :meth:`PolicySnapshot.to_payload` (and of its ``.npz`` files).
SNAPSHOT_FORMAT = "asynctrainer.PolicySnapshot/1"


#: Encodes a batch of every visual observation at once: one ``[n, H, W, C]`` array per visual
#: observation, in spec order → one ``[n, features]`` array each (e.g. an onnxruntime session).
ImageEncoder = Callable[[Sequence[F32]], list[F32]]


class Dense(NamedTuple):
    kernel: F32
    bias: F32


def _sigmoid(x: F32) -> F32:
    return (0.5 + 0.5 * np.tanh(0.5 * x)).astype(np.float32)  # no overflow for large |x|


class LSTM(NamedTuple):
    """One LSTM layer (gates in the order input, forget, cell, output, as Keras and PyTorch keep them).

    ``kernel`` ``[inputs, 4u]``, ``recurrent_kernel`` ``[u, 4u]``, ``bias`` ``[4u]``; the memory of
    an agent is ``[h | c]``, ``2u`` wide (ML-Agents' ``memory_size``).
    """

    kernel: F32
    recurrent_kernel: F32
    bias: F32

    @property
    def units(self) -> int:
        return int(self.recurrent_kernel.shape[0])


def lstm_mismatch(lstm: LSTM, inputs: int) -> str | None:
    """What does not fit in ``lstm`` for an input of width ``inputs``; None when all fits."""
    k, r, b = lstm
    u = r.shape[0] if r.ndim == 2 else -1
    if k.shape != (inputs, 4 * u) or r.shape != (u, 4 * u) or b.shape != (4 * u,):
        return (
            f"the LSTM has kernel {k.shape}, recurrent kernel {r.shape} and bias {b.shape}, but its input has "
            f"width {inputs} (expected ({inputs}, 4u), (u, 4u) and (4u,))"
        )
    return None


def lstm_step(lstm: LSTM, x: F32, memory: F32) -> tuple[F32, F32]:
    """One step for a batch: ``z = x K + h R + b``; ``c' = σ(f) c + σ(i) tanh(g)``; ``h' = σ(o) tanh(c')``.

    :returns: the output ``h'`` ``[n, u]`` and the new memory ``[h' | c']`` ``[n, 2u]``.
    """
    u = lstm.units
    h, c = memory[:, :u], memory[:, u:]
    z = x @ lstm.kernel + h @ lstm.recurrent_kernel + lstm.bias
    i, f, g, o = _sigmoid(z[:, :u]), _sigmoid(z[:, u : 2 * u]), np.tanh(z[:, 2 * u : 3 * u]), _sigmoid(z[:, 3 * u :])
    c_new = f * c + i * g
    h_new = (o * np.tanh(c_new)).astype(np.float32)
    return h_new, np.concatenate([h_new, c_new], axis=1).astype(np.float32)


class ActOutput(NamedTuple):
    """What one forward pass decided for a batch of agents.

    ``continuous_raw`` is the unclipped Gaussian sample (the learner's log-prob is of this);
    ``continuous`` is what the env receives, in [-1, 1]. ``log_prob`` is the sum over all
    action components; ``entropy`` likewise, per agent.
    """

    continuous_raw: F32
    continuous: F32
    discrete: npt.NDArray[np.int32]
    log_prob: F32
    entropy: F32
    #: A recurrent policy's memory after this step, ``[n, memory_size]`` (None without memory).
    memories: F32 | None = None


def flatten_obs(obs: Sequence[npt.ArrayLike] | npt.ArrayLike, n: int | None = None) -> F32:
    """Concatenate a list of per-observation arrays ``[n, *shape]`` into ``[n, obs_size]``."""
    if isinstance(obs, np.ndarray):
        parts: list[npt.NDArray[np.float32]] = [obs.astype(np.float32, copy=False)]
    else:
        parts = [np.asarray(o, dtype=np.float32) for o in obs]  # type: ignore[union-attr]
    rows = parts[0].shape[0] if n is None else n
    flat = [p.reshape(rows, -1) for p in parts]
    return flat[0] if len(flat) == 1 else np.concatenate(flat, axis=1)


def _log_softmax(x: F32) -> F32:
    m = x.max(axis=1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass(frozen=True, eq=False)
class PolicySnapshot:
    """A frozen, versioned numpy copy of one behavior's actor.

    :ivar version: number of updates that produced these weights (0 = initial weights).
    :ivar step: the trainer step when the snapshot was taken.
    """

    behavior_name: str
    version: int
    step: int
    behavior_spec: BehaviorSpec
    hidden: tuple[Dense, ...]
    discrete_head: Dense | None
    continuous_head: Dense | None
    log_std: F32 | None
    obs_mean: F32 | None = None
    obs_std: F32 | None = None
    #: SAC's policy: continuous actions are ``tanh(sample)`` (log-prob corrected), not clipped.
    tanh_squash: bool = False
    #: Per observation, the encoder of a visual one (:mod:`asynctrainer.runtime.encoders`) or None
    #: for a vector one, whose (normalised) values enter the hidden layers as they are. Empty when
    #: every observation is a vector.
    encoders: tuple[tuple[Op, ...] | None, ...] = ()
    #: Runs the visual encoders in place of numpy (:func:`asynctrainer.export.onnx_acting.accelerate`
    #: attaches an onnxruntime session); computes what the ops compute, so it is no part of the
    #: snapshot's value: not compared, not saved.
    image_encoder: ImageEncoder | None = field(default=None, compare=False, repr=False)
    #: The LSTM after the hidden layers of a policy with memory (``network_settings.memory``).
    lstm: LSTM | None = None
    #: Attention over the variable-length observations (:mod:`asynctrainer.runtime.attention`);
    #: its output follows the other encoded observations.
    attention: Attention | None = None
    #: Goal conditioning's last hidden layer (:mod:`asynctrainer.runtime.conditioning`), after ``hidden``.
    hyper: Hyper | None = None
    #: With ``hyper``: the columns of :meth:`encode`'s output that hold the goal observations.
    goal_columns: npt.NDArray[np.intp] = field(
        default_factory=lambda: np.zeros(0, np.intp), init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.hyper is not None:
            object.__setattr__(self, "goal_columns", goal_columns(self.behavior_spec, self.encoders))

    @classmethod
    def create(
        cls,
        behavior_name: str,
        version: int,
        step: int,
        behavior_spec: BehaviorSpec,
        *,
        hidden: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
        discrete_head: tuple[npt.ArrayLike, npt.ArrayLike] | None,
        continuous_head: tuple[npt.ArrayLike, npt.ArrayLike] | None,
        log_std: npt.ArrayLike | None,
        obs_mean: npt.ArrayLike | None = None,
        obs_std: npt.ArrayLike | None = None,
        tanh_squash: bool = False,
        encoders: Sequence[Sequence[Op] | None] = (),
        lstm: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike] | None = None,
        attention: Attention | None = None,
        hyper: Hyper | None = None,
    ) -> PolicySnapshot:
        """Copy the given arrays into read-only float32 arrays and build a snapshot."""
        if encoders and len(encoders) != len(behavior_spec.observation_specs):
            raise SpecError(
                f"A snapshot of behavior '{behavior_name}' has {len(encoders)} encoders for "
                f"{len(behavior_spec.observation_specs)} observations."
            )

        entities = sum(o.is_variable_length for o in behavior_spec.observation_specs)
        if entities != (0 if attention is None else len(attention.entity_encoders)) or (attention and not encoders):
            raise SpecError(
                f"A snapshot of behavior '{behavior_name}' has {entities} variable-length observations and "
                f"{0 if attention is None else len(attention.entity_encoders)} entity encoders; each variable-length "
                "observation needs one, in an attention with per-observation encoders (None where there is none)."
            )

        def dense(pair: tuple[npt.ArrayLike, npt.ArrayLike] | None) -> Dense | None:
            return None if pair is None else Dense(readonly_array(pair[0]), readonly_array(pair[1]))

        return cls(
            behavior_name=behavior_name,
            version=version,
            step=step,
            behavior_spec=behavior_spec,
            hidden=tuple(Dense(readonly_array(w), readonly_array(b)) for w, b in hidden),
            discrete_head=dense(discrete_head),
            continuous_head=dense(continuous_head),
            log_std=None if log_std is None else readonly_array(log_std),
            obs_mean=None if obs_mean is None else readonly_array(obs_mean),
            obs_std=None if obs_std is None else readonly_array(obs_std),
            tanh_squash=tanh_squash,
            encoders=tuple(None if e is None else readonly_ops(e) for e in encoders),
            lstm=None if lstm is None else LSTM(*(readonly_array(a) for a in lstm)),
            attention=None if attention is None else attention_from_arrays(attention_arrays(attention)),
            hyper=None if hyper is None else hyper_from_arrays(hyper_arrays(hyper)),
        )

    @property
    def action_spec(self) -> ActionSpec:
        return self.behavior_spec.action_spec

    @property
    def memory_size(self) -> int:
        """Width of an agent's memory (0 for a policy without memory)."""
        return 0 if self.lstm is None else 2 * self.lstm.units

    def weights(self) -> dict[str, F32]:
        """All arrays by a stable name (used by export, checkpoints and equality tests)."""
        out: dict[str, F32] = {}
        for i, layer in enumerate(self.hidden):
            out[f"hidden_{i}/kernel"], out[f"hidden_{i}/bias"] = layer
        if self.discrete_head is not None:
            out["discrete_head/kernel"], out["discrete_head/bias"] = self.discrete_head
        if self.continuous_head is not None:
            out["continuous_head/kernel"], out["continuous_head/bias"] = self.continuous_head
        if self.log_std is not None:
            out["log_std"] = self.log_std
        if self.obs_mean is not None and self.obs_std is not None:
            out["obs_mean"], out["obs_std"] = self.obs_mean, self.obs_std
        for i, ops in enumerate(self.encoders):
            if ops is not None:
                out.update(encoder_to_payload(ops, f"encoder_{i}")[1])
        if self.lstm is not None:
            out["lstm/kernel"], out["lstm/recurrent_kernel"], out["lstm/bias"] = self.lstm
        if self.attention is not None:
            out.update(attention_arrays(self.attention))
        if self.hyper is not None:
            out.update(hyper_arrays(self.hyper))
        return out

    def to_payload(self) -> dict[str, Any]:
        """The snapshot as plain data: ``{"header": JSON-able dict, "arrays": {name: array}}``.

        The one encoding of a snapshot: :meth:`save` writes it as ``.npz``, and the Ray executor
        sends it to its workers as is.
        """
        a = self.action_spec
        header = {
            "format": SNAPSHOT_FORMAT,
            "behavior_name": self.behavior_name,
            "version": self.version,
            "step": self.step,
            "observation_shapes": [list(o.shape) for o in self.behavior_spec.observation_specs],
            "observation_specs": [
                {
                    "shape": list(o.shape),
                    "name": o.name,
                    "dimension_properties": list(o.dimension_properties),
                    "observation_type": o.observation_type,
                }
                for o in self.behavior_spec.observation_specs
            ],
            "encoders": [
                None if ops is None else encoder_to_payload(ops, f"encoder_{i}")[0]
                for i, ops in enumerate(self.encoders)
            ],
            "continuous_size": a.continuous_size,
            "discrete_branches": list(a.discrete_branches),
            "num_hidden": len(self.hidden),
            "tanh_squash": self.tanh_squash,
            "memory_size": self.memory_size,
        }
        return {"header": header, "arrays": dict(self.weights())}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], spec: BehaviorSpec | None = None) -> PolicySnapshot:
        """Inverse of :meth:`to_payload`.

        :param spec: the behavior spec to attach (keeping observation names); by default it is
            rebuilt from the header's shapes.
        :raises SpecError: for a payload of another format.
        """
        header = payload["header"]
        if header.get("format") != SNAPSHOT_FORMAT:
            raise SpecError(f"A policy snapshot of format {header.get('format')!r}; expected {SNAPSHOT_FORMAT!r}.")
        w = payload["arrays"]
        if spec is None:
            described = header.get("observation_specs")
            observations = (
                tuple(
                    ObservationSpec(
                        tuple(o["shape"]), o["name"], tuple(o["dimension_properties"]), o["observation_type"]
                    )
                    for o in described
                )
                if described is not None
                else tuple(ObservationSpec(tuple(s)) for s in header["observation_shapes"])
            )
            spec = BehaviorSpec(observations, ActionSpec(header["continuous_size"], tuple(header["discrete_branches"])))
        encoders = [
            None if layout is None else encoder_from_payload(layout, w, f"encoder_{i}")
            for i, layout in enumerate(header.get("encoders", []))
        ]

        def pair(name: str) -> tuple[F32, F32] | None:
            return (w[f"{name}/kernel"], w[f"{name}/bias"]) if f"{name}/kernel" in w else None

        return cls.create(
            header["behavior_name"],
            int(header["version"]),
            int(header["step"]),
            spec,
            hidden=[(w[f"hidden_{i}/kernel"], w[f"hidden_{i}/bias"]) for i in range(header["num_hidden"])],
            discrete_head=pair("discrete_head"),
            continuous_head=pair("continuous_head"),
            log_std=w.get("log_std"),
            obs_mean=w.get("obs_mean"),
            obs_std=w.get("obs_std"),
            tanh_squash=bool(header["tanh_squash"]),
            encoders=encoders,
            lstm=(w["lstm/kernel"], w["lstm/recurrent_kernel"], w["lstm/bias"]) if "lstm/kernel" in w else None,
            attention=attention_from_arrays(w),
            hyper=hyper_from_arrays(w),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """:meth:`to_payload` as named arrays only: the JSON header becomes the bytes of ``header``."""
        payload = self.to_payload()
        return {**payload["arrays"], "header": np.frombuffer(json.dumps(payload["header"]).encode(), np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], spec: BehaviorSpec | None = None) -> PolicySnapshot:
        """Inverse of :meth:`to_arrays`.

        :raises SpecError: for arrays without a readable header, or of another format.
        """
        try:
            header = json.loads(bytes(np.asarray(arrays["header"], np.uint8)).decode())
        except (KeyError, ValueError) as exc:
            raise SpecError(f"A policy snapshot without a readable header: {exc}") from None
        rest = {k: v for k, v in arrays.items() if k != "header"}
        return cls.from_payload({"header": header, "arrays": rest}, spec)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the snapshot as one ``.npz`` (:meth:`to_arrays`; no pickle)."""
        arrays = {"__header__" if k == "header" else k.replace("/", "__"): v for k, v in self.to_arrays().items()}
        with open(path, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PolicySnapshot:
        """Read a snapshot written by :meth:`save` (numpy only: no TensorFlow needed)."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {"header" if k == "__header__" else k.replace("__", "/"): data[k] for k in data.files}
        return cls.from_arrays(arrays)

    def normalize(self, x: F32, columns: slice = slice(None)) -> F32:
        """``clip((x − mean) / std, ±5)`` with the statistics of ``columns`` of the flat row (all by default)."""
        if self.obs_mean is None or self.obs_std is None:
            return x
        return np.clip((x - self.obs_mean[columns]) / self.obs_std[columns], -5.0, 5.0).astype(np.float32)

    def encode(self, x: F32) -> F32:
        """Flat observation rows → the hidden layers' input.

        Vector parts normalised, visual ones encoded, in spec order; then the attention's output
        over the variable-length ones.
        """
        if not self.encoders:
            return self.normalize(x)
        parts: list[F32 | None] = []
        images: list[F32] = []
        entities: list[F32] = []
        start = 0
        for o, ops in zip(self.behavior_spec.observation_specs, self.encoders, strict=True):
            part, end = x[:, start : start + o.size], start + o.size
            if o.is_variable_length:
                entities.append(part.reshape(-1, *o.shape))
            elif ops is None:
                parts.append(self.normalize(part, slice(start, end)))
            else:
                images.append(part.reshape(-1, *o.shape))
                parts.append(None if self.image_encoder is not None else run_encoder(ops, images[-1]))
            start = end
        if self.image_encoder is not None:
            encoded = iter(self.image_encoder(images))
            parts = [next(encoded) if p is None else p for p in parts]
        done = [p for p in parts if p is not None]
        joined = None if not done else done[0] if len(done) == 1 else np.concatenate(done, axis=1)
        if self.attention is None:
            assert joined is not None
            return joined
        pooled = attend(self.attention, joined, entities)
        return pooled if joined is None else np.concatenate([joined, pooled], axis=1)

    def heads_width(self, hidden_width: int) -> tuple[int, str | None]:
        """The heads' input width, from the last hidden layer's ``hidden_width``, through the
        goal-conditioned layer and the LSTM where there are; and what of either does not fit (None: all fits)."""
        width = hidden_width
        if self.hyper is not None:
            problem = hyper_mismatch(self.hyper, width, len(self.goal_columns))
            if problem:
                return width, f"the goal-conditioned layer does not fit: {problem}"
            width = self.hyper.units
        if self.lstm is not None:
            problem = lstm_mismatch(self.lstm, width)
            if problem:
                return width, problem
            width = self.lstm.units
        return width, None

    def feature_width(self) -> int:
        """Width of :meth:`encode`'s output, from the encoders' shapes.

        :raises ValueError: an encoder does not fit its observation (a kernel larger than the image,
            or channels that differ).
        """
        width = 0
        encoders = self.encoders or (None,) * len(self.behavior_spec.observation_specs)
        for o, ops in zip(self.behavior_spec.observation_specs, encoders, strict=True):
            if o.is_variable_length:
                continue
            width += o.size if ops is None else int(np.prod(output_shape(ops, o.shape)))
        if self.attention is not None:
            width += int(self.attention.out.kernel.shape[1])
        return width

    def features(self, x: F32, memories: F32 | None = None) -> tuple[F32, F32 | None]:
        """Flat observation rows → the heads' input, and each agent's memory after this step (None without memory).

        The encoded observations go through the hidden layers, the goal-conditioned layer and the
        LSTM, where the policy has them; ``memories`` ``[n, memory_size]`` (None: zeros).
        """
        encoded = h = self.encode(x)
        for layer in self.hidden:
            h = h @ layer.kernel
            h += layer.bias
            np.tanh(h, out=h)
        if self.hyper is not None:
            h = hyper_layer(self.hyper, h, encoded[:, self.goal_columns])
        if self.lstm is None:
            return h, None
        if memories is None:
            memories = np.zeros((h.shape[0], self.memory_size), np.float32)
        elif memories.shape != (h.shape[0], self.memory_size):
            raise SpecError(
                f"Behavior '{self.behavior_name}' keeps memories of shape ({h.shape[0]}, {self.memory_size}) for "
                f"{h.shape[0]} agents, got {memories.shape}."
            )
        return lstm_step(self.lstm, h, np.asarray(memories, np.float32))

    def distribution_params(
        self,
        obs: Sequence[npt.ArrayLike] | npt.ArrayLike,
        action_mask: npt.ArrayLike | None = None,
        memories: npt.ArrayLike | None = None,
    ) -> tuple[F32 | None, list[F32]]:
        """Return (continuous mean, masked log-probabilities per discrete branch)."""
        mean, branch_logp, _ = self._distribution(obs, action_mask, memories)
        return mean, branch_logp

    def _distribution(
        self,
        obs: Sequence[npt.ArrayLike] | npt.ArrayLike,
        action_mask: npt.ArrayLike | None,
        memories: npt.ArrayLike | None,
    ) -> tuple[F32 | None, list[F32], F32 | None]:
        x = flatten_obs(obs)
        if x.shape[1] != self.behavior_spec.observation_size:
            raise SpecError(
                f"Behavior '{self.behavior_name}' expects observations of total size "
                f"{self.behavior_spec.observation_size}, got {x.shape[1]}."
            )
        h, new_memories = self.features(x, None if memories is None else np.asarray(memories, np.float32))
        mean = None
        if self.continuous_head is not None:
            mean = h @ self.continuous_head.kernel + self.continuous_head.bias
        branch_logp: list[F32] = []
        if self.discrete_head is not None:
            logits = h @ self.discrete_head.kernel + self.discrete_head.bias
            if action_mask is not None:
                allowed = np.asarray(action_mask, dtype=np.float32)
                logits = logits * allowed - MASK_PENALTY * (1.0 - allowed)
            start = 0
            for size in self.action_spec.discrete_branches:
                branch_logp.append(_log_softmax(logits[:, start : start + size]))
                start += size
        return mean, branch_logp, new_memories

    def act(
        self,
        obs: Sequence[npt.ArrayLike] | npt.ArrayLike,
        action_mask: npt.ArrayLike | None = None,
        *,
        deterministic: bool = False,
        rng: np.random.Generator,
        memories: npt.ArrayLike | None = None,
    ) -> ActOutput:
        """Choose actions for a batch of agents with a pure numpy forward pass.

        :param obs: one array ``[n, *shape]`` per observation spec (or one flat array).
        :param action_mask: ``[n, sum(branches)]`` with 1 = allowed, 0 = forbidden, or None.
        :param deterministic: take the distribution's mode (mean / argmax) instead of sampling.
        :param rng: the caller's generator; the only source of randomness.
        :param memories: a recurrent policy's memory of each agent, ``[n, memory_size]`` (zeros for
            agents that start an episode; None = all zeros); the new ones are in the output.
        """
        mean, branch_logp, new_memories = self._distribution(obs, action_mask, memories)
        n = (mean if mean is not None else branch_logp[0]).shape[0]
        log_prob = np.zeros(n, np.float32)
        entropy = np.zeros(n, np.float32)
        raw = np.zeros((n, self.action_spec.continuous_size), np.float32)
        if mean is not None and self.log_std is not None:
            std = np.exp(self.log_std)
            if deterministic:
                raw = mean.astype(np.float32)
            else:
                noise = rng.standard_normal(mean.shape, dtype=np.float32)
                raw = (mean + std * noise).astype(np.float32)
            z = (raw - mean) / std
            log_prob += (-0.5 * z * z - self.log_std - 0.5 * LOG_2PI).sum(axis=1)
            entropy += float((self.log_std + 0.5 * (1.0 + LOG_2PI)).sum())
        discrete = np.zeros((n, len(branch_logp)), np.int32)
        for b, logp in enumerate(branch_logp):
            probs = np.exp(logp)
            if deterministic:
                idx = probs.argmax(axis=1)
            else:
                u = rng.random((n, 1), dtype=np.float32)
                cdf = np.cumsum(probs, axis=1)
                idx = np.minimum((cdf < u * cdf[:, -1:]).sum(axis=1), probs.shape[1] - 1)
                # Never pick a masked action, even through float round-off at the cdf's edge.
                bad = probs[np.arange(n), idx] <= 0.0
                if bad.any():
                    idx[bad] = probs[bad].argmax(axis=1)
            discrete[:, b] = idx
            log_prob += logp[np.arange(n), idx]
            entropy -= (probs * np.where(probs > 0, logp, 0.0)).sum(axis=1)
        if self.tanh_squash:
            env_action = np.tanh(raw)
            # Change of variables for a = tanh(u): log π(a) = log μ(u) − Σ log(1 − tanh²(u)).
            log_prob -= np.log(1.0 - env_action * env_action + 1e-6).sum(axis=1)
        else:
            env_action = np.clip(raw, -CONTINUOUS_CLIP, CONTINUOUS_CLIP) / CONTINUOUS_CLIP
        return ActOutput(
            raw, env_action.astype(np.float32), discrete, log_prob.astype(np.float32), entropy, new_memories
        )
