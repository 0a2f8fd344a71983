"""Export a :class:`PolicySnapshot` to ONNX with ML-Agents' tensor names.

The graph is built directly with the ``onnx`` helper from the snapshot's numpy weights, so
export needs neither TensorFlow nor tf2onnx. It computes what
:meth:`PolicySnapshot.act` computes, and names its tensors as ML-Agents 2.x's
``ModelSerializer`` does, so Unity (Barracuda / Sentis) can run
it like a model trained by ``mlagents-learn``.

Inputs, in order (all float32, axis 0 is the dynamic axis ``batch``):

* ``obs_0``, ``obs_1``, ... one per observation spec: a vector one ``[batch, size_i]``, which the
  graph normalises as the snapshot does (``clip((x - mean) / std, -5, 5)``) when the snapshot
  carries ``obs_mean``/``obs_std``; a visual one channel-first, ``[batch, C, H, W]``, as Unity
  feeds it, through its encoder's ONNX ops (``Conv``, ``LeakyRelu``, ``MaxPool``, ...; the
  feature map goes channel-last before the ``Flatten``, where the snapshot's encoder flattens).
  The encoded observations are concatenated in spec order;
* ``action_masks`` ``[batch, sum(branches)]``, 1 = allowed, 0 = forbidden, only when the
  policy has discrete actions (a continuous policy does not read a mask);
* ``recurrent_in`` ``[batch, 1, memory_size]`` only for a policy with memory (Hallway's
  ``[batch, 1, 128]``): each agent's memory ``[h | c]``, zeros at an episode's start; ML-Agents'
  models without memory (3DBall, Basic, PushBlock) have none, and Unity feeds only the inputs a
  model declares. :func:`onnx_feed` builds the input dict.

Outputs, in order:

* ``version_number`` = ``[3.0]`` (ML-Agents' ``MODEL_EXPORT_VERSION``, Unity's
  ``ModelApiVersion.MLAgents2_0``) and ``memory_size`` = ``[memory_size]`` (0 without memory),
  float32 ``[1]``;
* with memory, ``recurrent_out`` ``[batch, 1, memory_size]``: the memory after this step, which
  Unity feeds back as the agent's next ``recurrent_in`` (one LSTM step after the hidden layers,
  written as ``Gemm``/``MatMul``, ``Sigmoid`` and ``Tanh`` per gate);
* continuous part: ``continuous_actions`` ``[batch, c]`` (``mean + std * N(0, 1)``, then
  ``clip(x, -3, 3) / 3``, or ``tanh(x)`` for a tanh-squashed policy),
  ``continuous_action_output_shape`` = ``[c]`` float32 ``[1]``, and
  ``deterministic_continuous_actions`` (the same transform of the mean);
* discrete part: ``discrete_actions`` ``[batch, n_branches]`` (one ``Multinomial`` draw per
  branch from the log-softmax of the logits masked in ML-Agents' form
  ``logits * mask - 1e8 * (-1 * mask + 1)``), ``discrete_action_output_shape`` = the branch
  sizes as float32 ``[1, n_branches]`` (ML-Agents' ``torch.Tensor([discrete_branches])``), and
  ``deterministic_discrete_actions`` (argmax of the probabilities per branch).

**Discrete action dtype: int64.** A model with ``version_number`` 3 is what ML-Agents 2.x's
torch exporter writes, and there ``discrete_actions`` comes from ``torch.multinomial`` and
``deterministic_discrete_actions`` from ``torch.argmax(..., keepdim=True)``: both int64 branch
indices. "Branch indices as floats" describes the
deprecated ``action`` output of older (version 2, TF-era) models, which is not exported.

Variable-length observations (Unity's buffer sensor) are inputs ``[batch, N_max, E]``, as
ML-Agents exports them, through the attention of :mod:`asynctrainer.runtime.attention` written
with ``MatMul``, ``Softmax`` and elementwise ops (means as products with constant vectors, so
the graph reads the same from opset 9 on).
Opsets 9 (ML-Agents' own) to :data:`MAX_OPSET` are supported; the IR version is set to the
lowest one that opset needs (onnx 1.23 would otherwise stamp IR 14, which older runtimes
refuse).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.errors import ExportError, SpecError
from asynctrainer.files import atomic_write_bytes
from asynctrainer.runtime import attention as attn
from asynctrainer.runtime import encoders as ops
from asynctrainer.runtime.conditioning import Hyper
from asynctrainer.runtime.snapshot import CONTINUOUS_CLIP, LSTM, MASK_PENALTY, PolicySnapshot

__all__ = [
    "MAX_OPSET",
    "MIN_OPSET",
    "MODEL_EXPORT_VERSION",
    "check_exportable",
    "export_onnx",
    "onnx_feed",
    "onnx_input_names",
    "onnx_output_names",
    "warm_up",
]

#: ML-Agents' ``MODEL_EXPORT_VERSION`` (Unity's ``ModelApiVersion.MLAgents2_0``).
MODEL_EXPORT_VERSION = 3
#: Lowest opset exported: ML-Agents' ``SerializationSettings.onnx_opset``.
MIN_OPSET = 9
#: Highest opset exported: onnxruntime 1.32 has no kernels for Multinomial-22 or RandomNormalLike-22.
MAX_OPSET = 21
#: Normalised observations are clipped to this many standard deviations (as the snapshot does).
OBS_CLIP = 5.0


# ----- names ------------------------------------------------------------------------------------


def onnx_input_names(snapshot: PolicySnapshot) -> list[str]:
    """The graph's input names, in order (ML-Agents' ``ModelSerializer.input_names``)."""
    spec = snapshot.behavior_spec
    names = [f"obs_{i}" for i in range(len(spec.observation_specs))]
    if spec.action_spec.is_discrete():
        names.append("action_masks")
    if snapshot.memory_size:
        names.append("recurrent_in")
    return names


def onnx_output_names(snapshot: PolicySnapshot) -> list[str]:
    """The graph's output names, in order (ML-Agents' ``ModelSerializer.output_names``)."""
    a = snapshot.action_spec
    names = ["version_number", "memory_size"]
    if snapshot.memory_size:
        names.append("recurrent_out")
    if a.is_continuous():
        names += ["continuous_actions", "continuous_action_output_shape", "deterministic_continuous_actions"]
    if a.is_discrete():
        names += ["discrete_actions", "discrete_action_output_shape", "deterministic_discrete_actions"]
    return names


def onnx_feed(
    snapshot: PolicySnapshot,
    obs: Sequence[npt.ArrayLike],
    action_mask: npt.ArrayLike | None = None,
    memories: npt.ArrayLike | None = None,
) -> dict[str, npt.NDArray[np.float32]]:
    """Build the input dict for an exported model, e.g. ``session.run(None, onnx_feed(...))``.

    :param obs: one array ``[n, *shape]`` per observation spec (visual ones channel-last, as the
        envs give them; the feed has them channel-first, as Unity feeds the model).
    :param action_mask: ``[n, sum(branches)]`` with 1 = allowed, or None for all allowed
        (ignored for a policy without discrete actions).
    :param memories: a policy with memory: each agent's memory ``[n, memory_size]``, or None for
        zeros (ignored for a policy without memory).
    :raises SpecError: the number of observations does not match the spec.
    """
    specs = snapshot.behavior_spec.observation_specs
    if len(obs) != len(specs):
        raise SpecError(f"Behavior '{snapshot.behavior_name}' has {len(specs)} observations, got {len(obs)}.")
    arrays = [np.asarray(o, dtype=np.float32) for o in obs]
    n = arrays[0].shape[0]
    feed = {
        f"obs_{i}": np.ascontiguousarray(
            a.reshape(n, *spec.shape).transpose(0, 3, 1, 2)
            if spec.is_visual
            else a.reshape(n, *spec.shape)
            if spec.is_variable_length
            else a.reshape(n, -1)
        )
        for i, (a, spec) in enumerate(zip(arrays, specs, strict=True))
    }
    a_spec = snapshot.action_spec
    if a_spec.is_discrete():
        mask = np.ones((n, a_spec.mask_size), np.float32) if action_mask is None else action_mask
        feed["action_masks"] = np.ascontiguousarray(np.asarray(mask, dtype=np.float32))
    m = snapshot.memory_size
    if m:
        memory = np.zeros((n, m), np.float32) if memories is None else np.asarray(memories, np.float32)
        feed["recurrent_in"] = np.ascontiguousarray(memory.reshape(n, 1, m))
    return feed


def warm_up() -> None:
    """Check a one-node model once, so the first real export does not pay for ``onnx.checker``'s set-up.

    The checker builds its operator-schema tables on first use: about 20 ms in one C call that
    holds the GIL (a loop waits that long). :func:`asynctrainer.preload` calls this.

    :raises ImportError: the ``onnx`` package is missing.
    """
    import onnx
    import onnx.checker
    import onnx.helper as h

    f32 = onnx.TensorProto.FLOAT
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"])],
        "warm_up",
        [h.make_tensor_value_info("x", f32, [1])],
        [h.make_tensor_value_info("y", f32, [1])],
    )
    onnx.checker.check_model(h.make_model(graph, opset_imports=[h.make_opsetid("", MIN_OPSET)]), full_check=True)


# ----- validation -------------------------------------------------------------------------------


def check_exportable(snapshot: PolicySnapshot) -> None:
    """Raise :class:`ExportError` unless the snapshot is a policy the exporters can write.

    Checks the observation shapes (vectors only), that every layer's shape chains from the
    observation size to the heads the action spec needs, and that every weight is finite.
    """
    name = snapshot.behavior_name
    spec = snapshot.behavior_spec
    a = spec.action_spec
    if not spec.observation_specs:
        raise ExportError(f"Cannot export behavior '{name}': it has no observations.")
    encoders = snapshot.encoders or (None,) * len(spec.observation_specs)
    if len(encoders) != len(spec.observation_specs):
        raise ExportError(
            f"Cannot export behavior '{name}': {len(encoders)} encoders for {len(spec.observation_specs)} observations."
        )
    for i, (o, encoder) in enumerate(zip(spec.observation_specs, encoders, strict=True)):
        vector = len(o.shape) == 1 and o.shape[0] >= 1 and encoder is None
        visual = o.is_visual and encoder is not None
        entities = o.is_variable_length and len(o.shape) == 2 and encoder is None and snapshot.attention is not None
        if not (vector or visual or entities):
            raise ExportError(
                f"Cannot export behavior '{name}': observation {i} has shape {tuple(o.shape)}"
                f"{' and an encoder' if encoder is not None else ''}; supported are vector observations (shape (n,)), "
                "visual ones (H, W, C) with an encoder and variable-length ones (N, E) with attention."
            )
    try:
        width = snapshot.feature_width()
    except ValueError as exc:  # a kernel that does not fit the image or its channels
        raise ExportError(f"Cannot export behavior '{name}': an observation encoder fails: {exc}") from exc

    def bad(what: str) -> ExportError:
        return ExportError(f"Cannot export behavior '{name}': {what}.")

    for i, layer in enumerate(snapshot.hidden):
        if layer.kernel.ndim != 2 or layer.kernel.shape[0] != width or layer.bias.shape != (layer.kernel.shape[1],):
            raise bad(
                f"hidden layer {i} has kernel {layer.kernel.shape} and bias {layer.bias.shape}, "
                f"but its input has width {width}"
            )
        width = int(layer.kernel.shape[1])
    width, problem = snapshot.heads_width(width)
    if problem:
        raise bad(problem)
    heads = (
        ("continuous", snapshot.continuous_head, a.continuous_size, a.is_continuous()),
        ("discrete", snapshot.discrete_head, a.mask_size, a.is_discrete()),
    )
    for part, head, size, needed in heads:
        if needed and head is None:
            raise bad(f"the action spec has {part} actions but the snapshot has no {part} head")
        if not needed and head is not None:
            raise bad(f"the snapshot has a {part} head but the action spec has no {part} actions")
        if head is not None and (head.kernel.shape != (width, size) or head.bias.shape != (size,)):
            raise bad(
                f"the {part} head has kernel {head.kernel.shape} and bias {head.bias.shape}, "
                f"expected ({width}, {size}) and ({size},)"
            )
    if a.is_continuous() and (snapshot.log_std is None or snapshot.log_std.shape != (a.continuous_size,)):
        got = None if snapshot.log_std is None else snapshot.log_std.shape
        raise bad(f"log_std has shape {got}, expected ({a.continuous_size},)")
    if snapshot.obs_mean is not None and snapshot.obs_std is not None:
        n = spec.observation_size
        if snapshot.obs_mean.shape != (n,) or snapshot.obs_std.shape != (n,):
            raise bad(
                f"obs_mean {snapshot.obs_mean.shape} and obs_std {snapshot.obs_std.shape} must both have shape ({n},)"
            )
    for key, value in snapshot.weights().items():
        if not np.all(np.isfinite(value)):
            raise bad(f"'{key}' contains NaN or infinite values")


# ----- graph ------------------------------------------------------------------------------------


class GraphBuilder:
    """Collects nodes and initializers; every helper returns the name of its output."""

    def __init__(self, onnx: Any, opset: int) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._initializer_names: set[str] = set()

    def const(self, name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        """Add an initializer (once per name) and return its name."""
        if name not in self._initializer_names:
            self.initializers.append(self.onnx.numpy_helper.from_array(np.array(value, dtype=dtype), name))
            self._initializer_names.add(name)
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, list(inputs), [output], name=f"{op}_{len(self.nodes)}", **attrs))
        return output

    def dense(self, x: str, layer: Any, prefix: str, output: str) -> str:
        """``x @ kernel + bias`` (Gemm) with the layer's weights stored as ``<prefix>/kernel`` and ``<prefix>/bias``."""
        kernel = self.const(f"{prefix}/kernel", layer.kernel)
        return self.node("Gemm", [x, kernel, self.const(f"{prefix}/bias", layer.bias)], output)

    def encoder(self, x: str, encoder: Sequence[ops.Op], prefix: str) -> str:
        """A visual encoder on the channel-first ``x``; its output is ``[batch, features]``.

        Convolutions run channel-first (kernels stored as ONNX's ``[C_out, C_in, kh, kw]``); the
        feature map is transposed channel-last before the flatten, so the following Dense sees the
        order the snapshot's (and Keras') flatten gives.
        """
        for k, op in enumerate(encoder):
            name = f"{prefix}/{k}"
            if isinstance(op, ops.Conv):
                kernel = self.const(f"{name}/kernel", op.kernel.transpose(3, 2, 0, 1))
                x = self.node(
                    "Conv",
                    [x, kernel, self.const(f"{name}/bias", op.bias)],
                    f"{name}/out",
                    strides=[op.stride, op.stride],
                    pads=[op.padding] * 4,
                    kernel_shape=list(op.kernel.shape[:2]),
                )
            elif isinstance(op, ops.Linear):
                x = self.dense(x, op, name, f"{name}/out")
            elif isinstance(op, ops.Activation):
                if op.name == "relu":
                    x = self.node("Relu", [x], f"{name}/out")
                elif op.name == "leaky_relu":
                    x = self.node("LeakyRelu", [x], f"{name}/out", alpha=ops.LEAKY_SLOPE)
                else:
                    x = self.node("Mul", [x, self.node("Sigmoid", [x], f"{name}/sigmoid")], f"{name}/out")
            elif isinstance(op, ops.MaxPool):
                x = self.node(
                    "MaxPool", [x], f"{name}/out", kernel_shape=[op.size, op.size], strides=[op.stride, op.stride]
                )
            elif isinstance(op, ops.Flatten):
                channel_last = self.node("Transpose", [x], f"{name}/channel_last", perm=[0, 2, 3, 1])
                x = self.node("Flatten", [channel_last], f"{name}/out", axis=1)
            else:
                x = self.node("Add", [x, self.encoder(x, op.ops, name)], f"{name}/out")
        return x

    def lstm(self, x: str, lstm: LSTM, memory_in: str, prefix: str) -> tuple[str, str]:
        """One LSTM step on ``x`` from ``memory_in`` ``[batch, 1, 2u]``: the output ``h'`` and ``[batch, 1, 2u]``.

        Each gate has its own slices of the kernels (``Gemm`` for the input and bias, ``MatMul``
        for the state); ``h`` and ``c`` are read from the memory by constant selection matrices,
        so every op means the same from opset 9 on.
        """
        u = lstm.units
        memory = self.node("Flatten", [memory_in], f"{prefix}/memory", axis=1)
        eye = np.eye(2 * u, dtype=np.float32)
        h = self.node("MatMul", [memory, self.const(f"{prefix}/select_h", eye[:, :u])], f"{prefix}/h")
        c = self.node("MatMul", [memory, self.const(f"{prefix}/select_c", eye[:, u:])], f"{prefix}/c")
        gates = []
        for k, gate in enumerate("ifgo"):
            cols = slice(k * u, (k + 1) * u)
            z_x = self.node(
                "Gemm",
                [
                    x,
                    self.const(f"{prefix}/{gate}/kernel", lstm.kernel[:, cols]),
                    self.const(f"{prefix}/{gate}/bias", lstm.bias[cols]),
                ],
                f"{prefix}/{gate}/input",
            )
            z_h = self.node(
                "MatMul",
                [h, self.const(f"{prefix}/{gate}/recurrent_kernel", lstm.recurrent_kernel[:, cols])],
                f"{prefix}/{gate}/state",
            )
            z = self.node("Add", [z_x, z_h], f"{prefix}/{gate}/z")
            gates.append(self.node("Tanh" if gate == "g" else "Sigmoid", [z], f"{prefix}/{gate}/out"))
        i, f, g, o = gates
        kept = self.node("Mul", [f, c], f"{prefix}/kept")
        written = self.node("Mul", [i, g], f"{prefix}/written")
        c_new = self.node("Add", [kept, written], f"{prefix}/c_new")
        h_new = self.node("Mul", [o, self.node("Tanh", [c_new], f"{prefix}/c_tanh")], f"{prefix}/h_new")
        both = self.node("Concat", [h_new, c_new], f"{prefix}/memory_out", axis=1)
        shape = self.const(f"{prefix}/memory_shape", [-1, 1, 2 * u], np.int64)
        return h_new, self.node("Reshape", [both, shape], "recurrent_out")

    def swish(self, x: str, output: str) -> str:
        return self.node("Mul", [x, self.node("Sigmoid", [x], f"{output}/sigmoid")], output)

    def linear(self, x: str, layer: Any, prefix: str, output: str) -> str:
        """``x @ kernel + bias`` for ``x`` of any rank (MatMul and Add; Gemm takes matrices only)."""
        product = self.node("MatMul", [x, self.const(f"{prefix}/kernel", layer.kernel)], f"{prefix}/product")
        return self.node("Add", [product, self.const(f"{prefix}/bias", layer.bias)], output)

    def mean_last(self, x: str, width: int, prefix: str) -> str:
        """The mean over the last axis, kept (``MatMul`` by ``1/width``: no Reduce op, whose form changes by opset)."""
        return self.node(
            "MatMul", [x, self.const(f"{prefix}/mean_of_{width}", np.full((width, 1), 1.0 / width))], prefix
        )

    def layer_norm(self, x: str, width: int, prefix: str) -> str:
        centred = self.node("Sub", [x, self.mean_last(x, width, f"{prefix}/mean")], f"{prefix}/centred")
        var = self.mean_last(self.node("Mul", [centred, centred], f"{prefix}/squared"), width, f"{prefix}/var")
        eps = self.node("Add", [var, self.const("attention/norm_epsilon", attn.NORM_EPSILON)], f"{prefix}/var_eps")
        return self.node("Div", [centred, self.node("Sqrt", [eps], f"{prefix}/std")], f"{prefix}/out")

    def attention(self, encoded_self: str | None, entities: Sequence[tuple[str, int, int]], a: attn.Attention) -> str:
        """The pooled attention ``[batch, D]`` over the variable-length inputs ``(name, N, E)``, as
        :func:`asynctrainer.runtime.attention.attend` computes it."""
        d, heads = int(a.query.kernel.shape[1]), attn.HEADS
        s = None
        if encoded_self is not None and a.self_encoder is not None:
            s = self.swish(
                self.dense(encoded_self, a.self_encoder, "attention/self", "attention/self/pre"), "attention/self/out"
            )
        embedded, padding = [], []
        for k, ((x, _, e), encoder) in enumerate(zip(entities, a.entity_encoders, strict=True)):
            prefix = f"attention/entity_{k}"
            if s is None:
                pre = self.linear(x, encoder, prefix, f"{prefix}/pre")
            else:  # [s, x] W = s W_s + x W_x, with s W_s broadcast over the entities
                w_self, w_entity = encoder.kernel[:d], encoder.kernel[d:]
                from_self = self.node("MatMul", [s, self.const(f"{prefix}/self_kernel", w_self)], f"{prefix}/from_self")
                shape = self.const("attention/one_entity", [-1, 1, d], np.int64)
                from_self = self.node("Reshape", [from_self, shape], f"{prefix}/from_self_3d")
                from_x = self.linear(x, ops.Linear(w_entity, encoder.bias), prefix, f"{prefix}/from_x")
                pre = self.node("Add", [from_x, from_self], f"{prefix}/pre")
            embedded.append(self.swish(pre, f"{prefix}/out"))
            squares = self.node(
                "MatMul",
                [self.node("Mul", [x, x], f"{prefix}/sq"), self.const(f"{prefix}/ones", np.ones((e, 1)))],
                f"{prefix}/sum_sq",
            )
            is_pad = self.node(
                "Less", [squares, self.const("attention/threshold", attn.PADDING_THRESHOLD)], f"{prefix}/is_pad"
            )
            pad = self.node("Cast", [is_pad], f"{prefix}/pad_3d", to=self.onnx.TensorProto.FLOAT)
            padding.append(self.node("Flatten", [pad], f"{prefix}/pad", axis=1))  # [batch, N]
        total = sum(n for _, n, _ in entities)
        e_all = embedded[0] if len(embedded) == 1 else self.node("Concat", embedded, "attention/embedded", axis=1)
        m = padding[0] if len(padding) == 1 else self.node("Concat", padding, "attention/padding", axis=1)
        x = self.layer_norm(e_all, d, "attention/norm_in")

        def split(layer: ops.Linear, label: str, perm: list[int]) -> str:
            y = self.linear(x, layer, f"attention/{label}", f"attention/{label}/out")
            shape = self.const("attention/heads_shape", [0, 0, heads, d // heads], np.int64)
            y = self.node("Reshape", [y, shape], f"attention/{label}/heads")
            return self.node("Transpose", [y], f"attention/{label}/by_head", perm=perm)

        q = split(a.query, "query", [0, 2, 1, 3])  # [batch, H, N, d/H]
        k_t = split(a.key, "key", [0, 2, 3, 1])  # [batch, H, d/H, N]
        v = split(a.value, "value", [0, 2, 1, 3])
        scores = self.node("MatMul", [q, k_t], "attention/raw_scores")
        scores = self.node("Div", [scores, self.const("attention/scale", np.sqrt(d))], "attention/scores")
        keys = self.node(
            "Reshape", [m, self.const("attention/keys_shape", [-1, 1, 1, total], np.int64)], "attention/keys"
        )
        present = self.node("Sub", [self.const("attention/one", 1.0), keys], "attention/present_keys")
        kept = self.node("Mul", [present, scores], "attention/kept")
        penalty = self.node(
            "Mul", [keys, self.const("attention/penalty_value", attn.SCORE_PENALTY)], "attention/penalty"
        )
        weights = self.node(
            "Softmax", [self.node("Sub", [kept, penalty], "attention/masked")], "attention/weights", axis=3
        )
        mixed = self.node(
            "Transpose",
            [self.node("MatMul", [weights, v], "attention/mixed_heads")],
            "attention/mixed_by_entity",
            perm=[0, 2, 1, 3],
        )
        mixed = self.node(
            "Reshape", [mixed, self.const("attention/joined_shape", [0, 0, d], np.int64)], "attention/mixed"
        )
        y = self.node("Add", [self.linear(mixed, a.out, "attention/out", "attention/out/pre"), x], "attention/residual")
        y = self.layer_norm(y, d, "attention/norm_out")
        present_rows = self.node("Sub", [self.const("attention/one", 1.0), m], "attention/present")  # [batch, N]
        weights_rows = self.node(
            "Reshape",
            [present_rows, self.const("attention/row_shape", [-1, 1, total], np.int64)],
            "attention/present_3d",
        )
        summed = self.node(
            "Flatten", [self.node("MatMul", [weights_rows, y], "attention/summed_3d")], "attention/summed", axis=1
        )
        count = self.node(
            "MatMul", [present_rows, self.const("attention/count_ones", np.ones((total, 1)))], "attention/count"
        )
        count = self.node(
            "Add", [count, self.const("attention/pool_epsilon", attn.POOL_EPSILON)], "attention/count_eps"
        )
        return self.node("Div", [summed, count], "attention/pooled")

    def hyper(self, x: str, inputs: int, goal: str, hyper: Hyper) -> str:
        """Goal conditioning's layer ``tanh(x · W(goal) + b)`` (:mod:`asynctrainer.runtime.conditioning`)."""
        u = hyper.units
        z = self.swish(self.dense(goal, hyper.first, "hyper/first", "hyper/first/pre"), "hyper/first/out")
        z = self.swish(self.dense(z, hyper.second, "hyper/second", "hyper/second/pre"), "hyper/second/out")
        z = self.layer_norm(z, u, "hyper/norm")
        flat = self.dense(z, hyper.weights, "hyper/weights", "hyper/weights/flat")
        weights = self.node("Reshape", [flat, self.const("hyper/weights_shape", [-1, inputs, u], np.int64)], "hyper/w")
        row = self.node("Reshape", [x, self.const("hyper/row_shape", [-1, 1, inputs], np.int64)], "hyper/row")
        product = self.node(
            "Flatten", [self.node("MatMul", [row, weights], "hyper/product_3d")], "hyper/product", axis=1
        )
        pre = self.node("Add", [product, self.const("hyper/bias", hyper.bias)], "hyper/pre")
        return self.node("Tanh", [pre], "hyper/out")

    def clip(self, x: str, low: float, high: float, output: str) -> str:
        if self.opset < 11:  # Clip-6: the bounds are attributes
            return self.node("Clip", [x], output, min=low, max=high)
        return self.node(
            "Clip", [x, self.const(f"clip/min_{low:g}", low), self.const(f"clip/max_{high:g}", high)], output
        )


def _build_model(snapshot: PolicySnapshot, onnx: Any, opset: int) -> Any:
    helper = onnx.helper
    FLOAT, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    spec = snapshot.behavior_spec
    a = spec.action_spec
    g = GraphBuilder(onnx, opset)

    inputs = [
        helper.make_tensor_value_info(
            f"obs_{i}", FLOAT, ["batch", o.shape[2], o.shape[0], o.shape[1]] if o.is_visual else ["batch", *o.shape]
        )
        for i, o in enumerate(spec.observation_specs)
    ]
    if a.is_discrete():
        inputs.append(helper.make_tensor_value_info("action_masks", FLOAT, ["batch", a.mask_size]))
    m = snapshot.memory_size
    if m:
        inputs.append(helper.make_tensor_value_info("recurrent_in", FLOAT, ["batch", 1, m]))

    # Observations -> features (the snapshot's encode: vector ones normalised, visual ones encoded; a tanh MLP).
    encoded: list[str] = []
    entities: list[tuple[str, int, int]] = []
    start = 0
    encoders = snapshot.encoders or (None,) * len(spec.observation_specs)
    for i, (o, encoder) in enumerate(zip(spec.observation_specs, encoders, strict=True)):
        x, end = f"obs_{i}", start + o.size
        if o.is_variable_length:
            entities.append((x, o.shape[0], o.shape[1]))
            start = end
            continue
        if encoder is not None:
            x = g.encoder(x, encoder, f"encoder_{i}")
        elif snapshot.obs_mean is not None and snapshot.obs_std is not None:
            centred = g.node("Sub", [x, g.const(f"obs_{i}/mean", snapshot.obs_mean[start:end])], f"obs_{i}/centred")
            scaled = g.node("Div", [centred, g.const(f"obs_{i}/std", snapshot.obs_std[start:end])], f"obs_{i}/scaled")
            x = g.clip(scaled, -OBS_CLIP, OBS_CLIP, f"obs_{i}/normalized")
        encoded.append(x)
        start = end
    if snapshot.attention is not None:  # after the other observations, as the snapshot encodes
        joined = None if not encoded else encoded[0] if len(encoded) == 1 else g.node("Concat", encoded, "self", axis=1)
        encoded.append(g.attention(joined, entities, snapshot.attention))
    h = features = encoded[0] if len(encoded) == 1 else g.node("Concat", encoded, "observations", axis=1)
    width = snapshot.feature_width()
    for i, layer in enumerate(snapshot.hidden):
        pre = g.dense(h, layer, f"hidden_{i}", f"hidden_{i}/pre")
        h = g.node("Tanh", [pre], f"hidden_{i}/out")
        width = int(layer.kernel.shape[1])
    if snapshot.hyper is not None:
        columns = g.const("hyper/goal_columns", snapshot.goal_columns, np.int64)
        h = g.hyper(h, width, g.node("Gather", [features, columns], "goals", axis=1), snapshot.hyper)
    if snapshot.lstm is not None:
        h, _ = g.lstm(h, snapshot.lstm, "recurrent_in", "lstm")

    outputs = [
        helper.make_tensor_value_info("version_number", FLOAT, [1]),
        helper.make_tensor_value_info("memory_size", FLOAT, [1]),
    ]
    if m:
        outputs.append(helper.make_tensor_value_info("recurrent_out", FLOAT, ["batch", 1, m]))
    g.node("Identity", [g.const("version_number/value", [float(MODEL_EXPORT_VERSION)])], "version_number")
    g.node("Identity", [g.const("memory_size/value", [float(m)])], "memory_size")

    if a.is_continuous():
        assert snapshot.continuous_head is not None and snapshot.log_std is not None
        c = a.continuous_size
        mean = g.dense(h, snapshot.continuous_head, "continuous_head", "continuous_mean")
        noise = g.node("RandomNormalLike", [mean], "continuous_noise", mean=0.0, scale=1.0)
        std = g.const("continuous_std", np.exp(snapshot.log_std))  # float32, as the snapshot computes it
        scaled_noise = g.node("Mul", [noise, std], "continuous_scaled_noise")
        sample = g.node("Add", [mean, scaled_noise], "continuous_sample")

        def to_env(x: str, output: str) -> str:
            if snapshot.tanh_squash:
                return g.node("Tanh", [x], output)
            clipped = g.clip(x, -CONTINUOUS_CLIP, CONTINUOUS_CLIP, f"{output}/clipped")
            return g.node("Div", [clipped, g.const("continuous_clip", CONTINUOUS_CLIP)], output)

        to_env(sample, "continuous_actions")
        g.node(
            "Identity", [g.const("continuous_action_output_shape/value", [float(c)])], "continuous_action_output_shape"
        )
        to_env(mean, "deterministic_continuous_actions")
        outputs += [
            helper.make_tensor_value_info("continuous_actions", FLOAT, ["batch", c]),
            helper.make_tensor_value_info("continuous_action_output_shape", FLOAT, [1]),
            helper.make_tensor_value_info("deterministic_continuous_actions", FLOAT, ["batch", c]),
        ]

    if a.is_discrete():
        assert snapshot.discrete_head is not None
        branches = a.discrete_branches
        logits = g.dense(h, snapshot.discrete_head, "discrete_head", "discrete_logits")
        # ML-Agents' form: logits * mask - 1e8 * (-1 * mask + 1).
        kept = g.node("Mul", [logits, "action_masks"], "masked/kept")
        negated = g.node("Mul", ["action_masks", g.const("masked/minus_one", -1.0)], "masked/negated")
        forbidden = g.node("Add", [negated, g.const("masked/one", 1.0)], "masked/forbidden")
        penalty = g.node("Mul", [g.const("masked/penalty_scale", MASK_PENALTY), forbidden], "masked/penalty")
        masked = g.node("Sub", [kept, penalty], "masked_logits")
        samples: list[str] = []
        argmaxes: list[str] = []
        start = 0
        for b, size in enumerate(branches):
            idx = g.const(f"branch_{b}/indices", np.arange(start, start + size), np.int64)
            start += size
            branch_logits = g.node("Gather", [masked, idx], f"branch_{b}/logits", axis=1)
            logp = g.node("LogSoftmax", [branch_logits], f"branch_{b}/log_probs", axis=1)
            probs = g.node("Exp", [logp], f"branch_{b}/probs")
            samples.append(
                g.node("Multinomial", [logp], f"branch_{b}/sample", dtype=INT64, sample_size=1),
            )
            argmaxes.append(g.node("ArgMax", [probs], f"branch_{b}/argmax", axis=1, keepdims=1))
        g.node("Concat", samples, "discrete_actions", axis=1)
        g.node(
            "Identity",
            [g.const("discrete_action_output_shape/value", [[float(s) for s in branches]])],
            "discrete_action_output_shape",
        )
        g.node("Concat", argmaxes, "deterministic_discrete_actions", axis=1)
        nb = len(branches)
        outputs += [
            helper.make_tensor_value_info("discrete_actions", INT64, ["batch", nb]),
            helper.make_tensor_value_info("discrete_action_output_shape", FLOAT, [1, nb]),
            helper.make_tensor_value_info("deterministic_discrete_actions", INT64, ["batch", nb]),
        ]

    graph = helper.make_graph(
        g.nodes,
        f"{snapshot.behavior_name}_policy",
        inputs,
        outputs,
        initializer=g.initializers,
        doc_string=f"asynctrainer policy '{snapshot.behavior_name}', version {snapshot.version}, step {snapshot.step}",
    )
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opset_ids,
        ir_version=helper.find_min_ir_version_for(opset_ids),
        producer_name="asynctrainer",
        producer_version=_version(),
    )
    helper.set_model_props(
        model,
        {
            "behavior_name": snapshot.behavior_name,
            "policy_version": str(snapshot.version),
            "step": str(snapshot.step),
        },
    )
    return model


def _version() -> str:
    from asynctrainer import __version__

    return __version__


# ----- writing ----------------------------------------------------------------------------------


def export_onnx(snapshot: PolicySnapshot, path: str | os.PathLike[str], *, opset: int = MIN_OPSET) -> pathlib.Path:
    """Write ``snapshot`` as an ONNX model with ML-Agents' names to ``path`` and return it.

    The file is replaced atomically: readers see the old model or the new one, never a part.

    :param opset: ONNX opset, :data:`MIN_OPSET` (ML-Agents' 9) to :data:`MAX_OPSET`.
    :raises ExportError: the policy cannot be expressed (e.g. non-vector observations), the
        model fails ``onnx.checker``, or the file cannot be written.
        Also when the ``onnx`` package is missing: the message names the ``export`` extra.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"ONNX opset {opset} is not supported; use {MIN_OPSET} to {MAX_OPSET}.")
    check_exportable(snapshot)
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as exc:
        raise ExportError(
            "ONNX export needs the 'onnx' package, which is not installed: pip install 'asynctrainer[export]'."
        ) from exc

    model = _build_model(snapshot, onnx, opset)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError or a shape-inference error
        raise ExportError(f"The ONNX model of behavior '{snapshot.behavior_name}' failed onnx.checker: {exc}") from exc
    out = pathlib.Path(path)
    try:
        atomic_write_bytes(out, model.SerializeToString())
    except OSError as exc:
        raise ExportError(
            f"Could not write the ONNX model of behavior '{snapshot.behavior_name}' to {out}: {exc}"
        ) from exc
    return out
