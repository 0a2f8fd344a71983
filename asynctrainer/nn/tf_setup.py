"""Import TensorFlow once, quietly, with thread pools sized for small machines.

TF reads its log level and oneDNN switch at import, and its thread pools can only be
set before the first op runs, so every module that needs TF goes through :func:`tf`.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

from asynctrainer.runtime.scheduling import tf_determinism, tf_threads

__all__ = ["keras", "tf"]

_lock = threading.Lock()
_configured = False


def tf() -> ModuleType:
    """Return the ``tensorflow`` module, configured on first use.

    Thread pools: ``ASYNCTRAINER_TF_THREADS`` (default 1 intra-op and 1 inter-op thread).
    On a small machine one thread keeps the event loop's lag low while an update runs and
    leaves a core for env stepping; raise it on a big machine with big networks.
    Op determinism is on, so a seeded run repeats exactly; ``ASYNCTRAINER_TF_DETERMINISM=off``
    leaves it off (TensorFlow offers no way back once it is on in a process).

    :raises SettingsError: ``ASYNCTRAINER_TF_THREADS`` is not a positive whole number, or
        ``ASYNCTRAINER_TF_DETERMINISM`` is neither ``on`` nor ``off``.
    """
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow

    with _lock:
        if not _configured:
            threads = tf_threads()
            deterministic = tf_determinism()
            try:
                tensorflow.config.threading.set_intra_op_parallelism_threads(threads)
                tensorflow.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TF was already initialised by the host program: keep its pools
                pass
            if deterministic:
                tensorflow.config.experimental.enable_op_determinism()
            tensorflow.get_logger().setLevel("ERROR")
            _configured = True
    return tensorflow


def keras() -> ModuleType:
    """Return ``keras`` (TF backend), after :func:`tf` configured TensorFlow."""
    tf()
    import keras as keras_module

    return keras_module
