"""Loops inside a traced TensorFlow function, written without autograph.

The trainers trace with ``autograph=False`` (autograph parses and compiles Python source while
tracing, holding the GIL for tens of ms: ``runtime/scheduling.py``), so a loop over minibatches
or gradient steps is an explicit ``tf.while_loop``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asynctrainer.nn.tf_setup import tf

__all__ = ["sum_over_range"]


def sum_over_range(n: Any, body: Callable[[Any], Any], size: int) -> Any:
    """``sum(body(i) for i in range(n))`` as a ``tf.while_loop``; ``body(i)`` returns ``[size]`` float32.

    The iterations run in order, so a body that updates variables sees the previous updates.
    """
    t = tf()
    _, total = t.while_loop(
        lambda i, _: i < n, lambda i, acc: (i + 1, acc + body(i)), (t.constant(0), t.zeros([size], t.float32))
    )
    return total
