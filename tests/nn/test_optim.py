"""The fused Adam step against Keras's own, and the per-width traced update functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asynctrainer.nn.graph_loops import PerWidth, minibatch_rows
from asynctrainer.nn.optim import adam_step
from asynctrainer.nn.tf_setup import keras, tf


def variables(rng: np.random.Generator) -> list[Any]:
    return [keras().Variable(rng.normal(size=shape).astype(np.float32)) for shape in ((4, 3), (3,), (2,))]


def test_adam_step_matches_keras_apply_weights_slots_and_step_count() -> None:
    t = tf()
    rng = np.random.default_rng(0)
    ours, theirs = variables(rng), variables(np.random.default_rng(0))
    opt_ours = keras().optimizers.Adam(learning_rate=3e-3, epsilon=1e-5)
    opt_theirs = keras().optimizers.Adam(learning_rate=3e-3, epsilon=1e-5)
    opt_ours.build(ours)
    opt_theirs.build(theirs)

    @t.function(autograph=False)
    def fused(grads: Any) -> None:
        adam_step(opt_ours, [*grads, None], ours)  # the last variable has no gradient

    @t.function(autograph=False)
    def keras_apply(grads: Any) -> None:
        opt_theirs.apply(grads, theirs[:2])

    for _ in range(7):
        grads = [t.constant(rng.normal(size=v.shape).astype(np.float32)) for v in ours[:2]]
        fused(grads)
        keras_apply(grads)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    slots = zip(opt_ours._momentums + opt_ours._velocities, opt_theirs._momentums + opt_theirs._velocities, strict=True)
    for a, b in slots:
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    assert int(opt_ours.iterations.numpy()) == int(opt_theirs.iterations.numpy()) == 7
    assert not np.any(opt_ours._momentums[2].numpy())  # no gradient: its slots untouched
    assert np.array_equal(ours[2].numpy(), theirs[2].numpy())  # ... and the variable too


def test_adam_step_refuses_options_the_fused_kernel_lacks() -> None:
    v = variables(np.random.default_rng(1))
    opt = keras().optimizers.Adam(learning_rate=1e-3, amsgrad=True)
    opt.build(v)
    with pytest.raises(ValueError, match="amsgrad"):
        adam_step(opt, [None, None, None], v)


def test_per_width_traces_the_expected_width_once_and_others_when_they_come() -> None:
    t = tf()
    traced: list[Any] = []

    @t.function(autograph=False)
    def total(x: Any) -> Any:
        traced.append(x.shape)
        return t.reduce_sum(x, axis=1)

    fn = PerWidth(total, lambda w: [t.TensorSpec([None, w], t.float32)], lambda args: int(args[0].shape[1]), 4)
    assert [tuple(s) for s in traced] == [(None, 4)]  # traced at once, with the width static
    np.testing.assert_allclose(fn(np.ones((3, 4), np.float32)).numpy(), [4, 4, 4])
    np.testing.assert_allclose(fn(np.ones((2, 4), np.float32)).numpy(), [4, 4])
    assert len(traced) == 1
    np.testing.assert_allclose(fn(np.ones((1, 2), np.float32)).numpy(), [2])
    assert [tuple(s) for s in traced] == [(None, 4), (None, 2)]


@pytest.mark.parametrize(("batch", "seq", "rows"), [(256, 0, 256), (256, 10, 250), (8, 16, 16), (64, 16, 64)])
def test_minibatch_rows_are_whole_sequences(batch: int, seq: int, rows: int) -> None:
    assert minibatch_rows(batch, seq) == rows
