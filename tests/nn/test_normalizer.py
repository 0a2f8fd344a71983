"""The running observation normaliser: Chan et al.'s parallel mean/variance update."""

from __future__ import annotations

import numpy as np

from asynctrainer.nn.normalizer import Normalizer


def test_batched_updates_match_the_statistics_of_all_data() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)).astype(np.float32) for n in (1, 7, 64, 3)]
    norm = Normalizer(4)
    for b in batches:
        norm.update(b)
    data = np.concatenate(batches).astype(np.float64)
    assert norm.count == len(data)
    np.testing.assert_allclose(norm.mean, data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.std, data.std(axis=0), rtol=1e-5)


def test_an_empty_batch_changes_nothing() -> None:
    norm = Normalizer(2)
    norm.update(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    before = norm.state()
    norm.update(np.zeros((0, 2), np.float32))
    after = norm.state()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_std_is_one_until_two_samples_were_seen() -> None:
    norm = Normalizer(3)
    np.testing.assert_array_equal(norm.std, np.ones(3, np.float32))
    norm.update(np.array([[5.0, -1.0, 0.0]], np.float32))
    np.testing.assert_array_equal(norm.std, np.ones(3, np.float32))


def test_apply_centres_scales_and_clips_at_five() -> None:
    norm = Normalizer(1)
    norm.update(np.array([[-1.0], [1.0]], np.float32))  # mean 0, population std 1
    out = norm.apply(np.array([[0.5], [100.0], [-100.0]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0.5, 5.0, -5.0])


def test_constant_features_do_not_divide_by_zero() -> None:
    norm = Normalizer(1)
    norm.update(np.full((10, 1), 7.0, np.float32))
    assert np.isfinite(norm.apply(np.array([[7.5]], np.float32))).all()


def test_state_round_trips() -> None:
    norm = Normalizer(2)
    norm.update(np.array([[1.0, 2.0], [2.0, 5.0], [0.0, -1.0]], np.float32))
    copy = Normalizer(2)
    copy.load_state(norm.state())
    assert copy.count == norm.count
    np.testing.assert_array_equal(copy.mean, norm.mean)
    np.testing.assert_array_equal(copy.std, norm.std)
    x = np.array([[0.3, 0.7]], np.float32)
    np.testing.assert_array_equal(copy.apply(x), norm.apply(x))
