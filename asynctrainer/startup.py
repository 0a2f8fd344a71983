"""Import the heavy parts (TensorFlow, Keras, the trainers, gymnasium, ONNX export) before a loop serves.

A module is imported once per process, and importing TensorFlow holds the GIL for whole
seconds while its shared libraries load (``benchmarks/loop_lag.py``: over 1 s in one piece).
The Runner imports what it needs in a worker thread, so the loop keeps running between the
pieces, but no thread can stop a C extension's loading from holding the GIL. A host that
must tick from its first second calls :func:`preload` at start-up, before its loop serves.
"""

from __future__ import annotations

import contextlib
import importlib

__all__ = ["preload"]

_MODULES = (
    "asynctrainer.ppo.trainer",
    "asynctrainer.sac.trainer",
    "asynctrainer.checkpoints.manager",
    "asynctrainer.app",
    # Building a GymnasiumEnv imports these (~170 ms in one piece on the 2-core VM).
    "gymnasium",
    "gymnasium.vector",
    # The Runner writes configuration.yaml with it.
    "yaml",
)


def preload(*, export: bool = True) -> None:
    """Import and configure TensorFlow and Keras, start TensorFlow's runtime, import the trainers and gymnasium.

    :param export: also import ONNX export (``onnx``) and set up its model checker (20 ms in one
        piece at the first export otherwise), if the ``export`` extra is installed.
    """
    from asynctrainer.nn.tf_setup import keras, tf

    keras()
    # The first op creates TensorFlow's eager context (devices, thread pools): ~20 ms in one piece.
    tf().zeros([1]).numpy()
    for name in _MODULES:
        importlib.import_module(name)
    if export:
        from asynctrainer.export.onnx import warm_up

        with contextlib.suppress(ImportError):  # no export extra: the first export will say so
            warm_up()
