from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asynctrainer.ppo.gae import gae, gae_segments


def loop_gae(r: np.ndarray, d: np.ndarray, v: np.ndarray, lam: float) -> np.ndarray:
    out = np.zeros_like(r)
    for t in range(len(r)):
        acc, coef = 0.0, 1.0
        for k in range(t, len(r)):
            acc += coef * (r[k] + d[k] * v[k + 1] - v[k])
            coef *= d[k] * lam
        out[t] = acc
    return out


def test_golden_values_with_terminal() -> None:
    adv, ret = gae(
        np.array([1.0, 1.0], np.float32),
        np.array([0.5, 0.0], np.float32),
        np.array([0.0, 0.0, 100.0], np.float32),
        1.0,
    )
    # A terminal step bootstraps nothing: the 100 after it is ignored.
    assert adv.tolist() == [1.5, 1.0]
    assert ret.tolist() == [1.5, 1.0]


def test_lambda_zero_is_td0() -> None:
    v = np.array([1.0, 2.0, 3.0], np.float32)
    adv, _ = gae(np.array([0.5, 0.5], np.float32), np.array([0.9, 0.9], np.float32), v, 0.0)
    np.testing.assert_allclose(adv, [0.5 + 0.9 * 2 - 1, 0.5 + 0.9 * 3 - 2], rtol=1e-6)


def test_infinite_horizon_return_when_cuts_are_bootstrapped() -> None:
    gamma = 0.9
    r = np.ones(5, np.float32)
    v_true = 1.0 / (1.0 - gamma)
    values = np.full(6, v_true, np.float32)
    _, ret = gae(r, np.full(5, gamma, np.float32), values, 0.95)
    np.testing.assert_allclose(ret, v_true, rtol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_matches_plain_loop(n: int, lam: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    r = rng.normal(size=n).astype(np.float32)
    d = (rng.random(n) * (rng.random(n) > 0.2)).astype(np.float32)
    v = rng.normal(size=n + 1).astype(np.float32)
    adv, _ = gae(r, d, v, lam)
    np.testing.assert_allclose(adv, loop_gae(r, d, v, lam), rtol=1e-4, atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=1, max_size=8), st.integers(0, 2**31 - 1))
def test_segments_match_one_trajectory_at_a_time(trajs: list[tuple[int, bool]], seed: int) -> None:
    """The buffer-wide GAE equals :func:`gae` run on each trajectory, terminals and cuts alike."""
    rng = np.random.default_rng(seed)
    gamma, lam = 0.97, 0.9
    lengths = np.array([n for n, _ in trajs], np.int64)
    terminated = np.array([t for _, t in trajs], bool)
    rewards = rng.normal(size=int(lengths.sum())).astype(np.float32)
    values = rng.normal(size=int(lengths.sum())).astype(np.float32)
    bootstrap = rng.normal(size=len(trajs)).astype(np.float32)
    adv, ret = gae_segments(rewards, values, bootstrap, lengths, terminated, gamma, lam)
    start = 0
    for i, (n, term) in enumerate(trajs):
        discounts = np.full(n, gamma, np.float32)
        if term:
            discounts[-1] = 0.0
        v = np.append(values[start : start + n], bootstrap[i]).astype(np.float32)
        want_adv, want_ret = gae(rewards[start : start + n], discounts, v, lam)
        np.testing.assert_allclose(adv[start : start + n], want_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ret[start : start + n], want_ret, rtol=1e-5, atol=1e-5)
        start += n


def test_segments_reject_lengths_that_do_not_cover_the_rewards() -> None:
    with pytest.raises(ValueError, match="lengths summing to 3"):
        gae_segments(
            np.zeros(4, np.float32),
            np.zeros(4, np.float32),
            np.zeros(2, np.float32),
            np.array([1, 2], np.int64),
            np.array([False, True]),
            0.99,
            0.95,
        )
