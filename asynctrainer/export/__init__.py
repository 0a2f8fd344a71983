"""Export a policy snapshot: ONNX with ML-Agents' interface (what Unity loads), and a TF SavedModel."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "export_onnx": "asynctrainer.export.onnx",
    "export_saved_model": "asynctrainer.export.savedmodel",
    "onnx_input_names": "asynctrainer.export.onnx",
    "onnx_output_names": "asynctrainer.export.onnx",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
