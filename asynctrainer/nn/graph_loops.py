"""Loops inside a traced TensorFlow function, written without autograph.

The trainers trace with ``autograph=False`` (autograph parses and compiles Python source while
tracing, holding the GIL for tens of ms: ``runtime/scheduling.py``), so a loop over minibatches
or gradient steps is an explicit ``tf.while_loop``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asynctrainer.nn.tf_setup import tf

__all__ = ["PerWidth", "minibatch_rows", "sum_over_range"]


def sum_over_range(n: Any, body: Callable[[Any], Any], size: int) -> Any:
    """``sum(body(i) for i in range(n))`` as a ``tf.while_loop``; ``body(i)`` returns ``[size]`` float32.

    The iterations run in order, so a body that updates variables sees the previous updates.
    """
    t = tf()
    _, total = t.while_loop(
        lambda i, _: i < n, lambda i, acc: (i + 1, acc + body(i)), (t.constant(0), t.zeros([size], t.float32))
    )
    return total


class PerWidth:
    """A traced update function, with one concrete function per minibatch width.

    An input signature with the minibatch's width left open (``None``) makes every shape in the
    gradient's graph dynamic: the graph then computes shapes, broadcast arguments and reshapes
    at every step. With the width fixed TensorFlow's graph optimiser folds them away (a
    CartPole PPO minibatch step: 541 graph ops → 468, about 10% less time). The width is the
    same for every update of a run in steady state, so the one expected is traced at once and
    any other (a last short buffer, a batch larger than the buffer) is traced when it comes.

    :param function: a ``tf.function`` without an input signature.
    :param signature: the input signature for a width.
    :param width_of: the width of a call's arguments.
    :param expected: the width traced at once (None: none).
    """

    def __init__(
        self,
        function: Any,
        signature: Callable[[int], list[Any]],
        width_of: Callable[[tuple[Any, ...]], int],
        expected: int | None,
    ) -> None:
        self._function = function
        self._signature = signature
        self._width_of = width_of
        self._concrete: dict[int, Any] = {}
        if expected is not None:
            self.concrete(expected)

    def concrete(self, width: int) -> Any:
        """The concrete function for minibatches of ``width`` (traced on first use)."""
        found = self._concrete.get(width)
        if found is None:
            found = self._concrete[width] = self._function.get_concrete_function(*self._signature(width))
        return found

    def __call__(self, *args: Any) -> Any:
        return self.concrete(self._width_of(args))(*args)


def minibatch_rows(batch_size: int, sequence_length: int) -> int:
    """The rows of a full minibatch: ``batch_size``, or with memory (``sequence_length`` > 0) that
    many rounded down to whole sequences, at least one."""
    if not sequence_length:
        return batch_size
    return max(batch_size // sequence_length, 1) * sequence_length
