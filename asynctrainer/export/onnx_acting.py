"""Act on images with onnxruntime: a snapshot's visual encoders as one in-memory ONNX session.

Why: a snapshot acts on the event loop, and its convolutions are its cost. Measured on this
project's 2-core machine for an 84×84×3 ``nature_cnn`` policy (``benchmarks/serve_latency.py``'s
visual rows), numpy's patch-matrix convolutions take about 1.7 ms for one agent and 48 ms for 64;
onnxruntime's kernels take about 0.3 ms and 9 ms with two threads. onnxruntime also releases the
GIL while it runs, so the learner's thread keeps working meanwhile. Vector parts, the dense body,
the heads and sampling stay in numpy: they are microseconds, and the snapshot's log-probabilities
and sampling stay one implementation.

:func:`accelerate` returns the snapshot with an :data:`~asynctrainer.runtime.snapshot.ImageEncoder`
attached; it is a no-op for snapshots without visual observations and when onnxruntime is not
installed (the snapshot then encodes with numpy, computing the same function). The trainers'
snapshots, the Ray workers' and :class:`~asynctrainer.serving.server.PolicyServer`'s go through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.export.onnx import MIN_OPSET, GraphBuilder
from asynctrainer.runtime.scheduling import acting_threads
from asynctrainer.runtime.snapshot import PolicySnapshot

__all__ = ["OnnxImageEncoder", "accelerate", "image_encoder_model"]

F32 = npt.NDArray[np.float32]


def image_encoder_model(snapshot: PolicySnapshot) -> bytes:
    """The serialized ONNX model of the snapshot's visual encoders.

    Inputs ``image_<k>`` are the visual observations in spec order, channel-last
    ``[batch, H, W, C]`` as the snapshot holds them (transposed channel-first inside the graph);
    outputs ``features_<k>`` are their encodings ``[batch, features]``.
    """
    import onnx
    import onnx.helper as h

    g = GraphBuilder(onnx, MIN_OPSET)
    inputs, outputs = [], []
    k = 0
    for i, (o, ops) in enumerate(zip(snapshot.behavior_spec.observation_specs, snapshot.encoders, strict=True)):
        if ops is None:
            continue
        name = f"image_{k}"
        inputs.append(h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", *o.shape]))
        channel_first = g.node("Transpose", [name], f"{name}/channel_first", perm=[0, 3, 1, 2])
        g.node("Identity", [g.encoder(channel_first, ops, f"encoder_{i}")], f"features_{k}")
        outputs.append(h.make_tensor_value_info(f"features_{k}", onnx.TensorProto.FLOAT, ["batch", None]))
        k += 1
    graph = h.make_graph(g.nodes, "image_encoders", inputs, outputs, initializer=g.initializers)
    opset_ids = [h.make_opsetid("", MIN_OPSET)]
    model = h.make_model(graph, opset_imports=opset_ids, ir_version=h.find_min_ir_version_for(opset_ids))
    return bytes(model.SerializeToString())


class OnnxImageEncoder:
    """An onnxruntime session of :func:`image_encoder_model`, callable as an ``ImageEncoder``.

    ``threads`` intra-op threads (default :func:`~asynctrainer.runtime.scheduling.acting_threads`),
    which sleep between calls instead of spinning. Pickles as its model bytes.
    """

    def __init__(self, model: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.model = model
        self.threads = acting_threads() if threads is None else threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, images: Sequence[F32]) -> list[F32]:
        feed = {name: np.ascontiguousarray(x, dtype=np.float32) for name, x in zip(self._inputs, images, strict=True)}
        return [np.asarray(f, dtype=np.float32) for f in self.session.run(None, feed)]

    def __reduce__(self) -> tuple[Any, ...]:
        return (OnnxImageEncoder, (self.model, self.threads))


def accelerate(snapshot: PolicySnapshot, threads: int | None = None) -> PolicySnapshot:
    """The snapshot with its visual encoders run by onnxruntime (unchanged if it has none or onnxruntime is missing)."""
    if snapshot.image_encoder is not None or not any(ops is not None for ops in snapshot.encoders):
        return snapshot
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return snapshot
    return dataclasses.replace(snapshot, image_encoder=OnnxImageEncoder(image_encoder_model(snapshot), threads))
