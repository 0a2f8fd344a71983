from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from asynctrainer.ppo.gae import gae


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
