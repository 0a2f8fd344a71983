"""PPO's losses against values computed by hand (the formulas are in ``asynctrainer/ppo/loss.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asynctrainer.nn.tf_setup import tf
from asynctrainer.ppo import loss

RATIOS = [0.5, 1.0, 1.5, 2.0]
ADVANTAGES = [1.0, -1.0, 2.0, -2.0]


def _t(values: list[float]) -> object:
    return tf().constant(np.array(values, np.float32))


def _log_probs() -> tuple[object, object]:
    return _t([math.log(r) for r in RATIOS]), _t([0.0] * len(RATIOS))


def test_clipped_surrogate_takes_the_pessimistic_term_per_sample() -> None:
    # ρ = [0.5, 1, 1.5, 2], clip(ρ, 0.8, 1.2) = [0.8, 1, 1.2, 1.2]
    # ρA = [0.5, -1, 3, -4], clip·A = [0.8, -1, 2.4, -2.4], min = [0.5, -1, 2.4, -4]
    # loss = -mean(min) = -(0.5 - 1 + 2.4 - 4) / 4 = 0.525
    log_prob, behavior = _log_probs()
    value = float(loss.clipped_surrogate_loss(log_prob, behavior, _t(ADVANTAGES), 0.2))
    assert value == pytest.approx(0.525, abs=1e-6)


def test_clipped_surrogate_is_the_plain_surrogate_when_epsilon_is_large() -> None:
    log_prob, behavior = _log_probs()
    value = float(loss.clipped_surrogate_loss(log_prob, behavior, _t(ADVANTAGES), 10.0))
    # -mean(ρA) = -(0.5 - 1 + 3 - 4) / 4 = 0.375
    assert value == pytest.approx(0.375, abs=1e-6)


def test_value_loss_is_the_mean_squared_error() -> None:
    # (2-1)², (2-2)², (0-3)² → (1 + 0 + 9) / 3
    assert float(loss.value_loss(_t([1.0, 2.0, 3.0]), _t([2.0, 2.0, 0.0]))) == pytest.approx(10 / 3, abs=1e-6)


def test_approx_kl_matches_the_hand_computed_estimate() -> None:
    # (ρ - 1) - log ρ per sample: 0.193147, 0, 0.094535, 0.306853 → mean 0.148634
    log_prob, behavior = _log_probs()
    expected = np.mean([(r - 1) - math.log(r) for r in RATIOS])
    assert float(loss.approx_kl(log_prob, behavior)) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.148634, abs=1e-6)


def test_approx_kl_is_zero_for_the_same_policy() -> None:
    same = _t([-0.3, -1.2, -2.0])
    assert float(loss.approx_kl(same, same)) == pytest.approx(0.0, abs=1e-7)


def test_clip_fraction_counts_ratios_outside_the_band() -> None:
    log_prob, behavior = _log_probs()
    # |ρ - 1| > 0.2 for 0.5, 1.5 and 2 → 3 of 4
    assert float(loss.clip_fraction(log_prob, behavior, 0.2)) == pytest.approx(0.75)


def test_losses_refuse_tensors_that_are_not_rank_1() -> None:
    with pytest.raises(ValueError, match="rank-1"):
        loss.value_loss(tf().zeros([2, 2]), tf().zeros([2, 2]))
