"""SAC's pure losses on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asynctrainer.nn.tf_setup import tf
from asynctrainer.sac import loss


def c(x: object) -> object:
    return tf().constant(np.asarray(x, np.float32))


def test_target_entropy_is_ml_agents_minus_size_and_a_fifth_of_log_branch_size() -> None:
    np.testing.assert_allclose(loss.target_entropy(2, (2, 3)), [-2.0, 0.2 * math.log(2), 0.2 * math.log(3)], rtol=1e-6)
    np.testing.assert_allclose(loss.target_entropy(0, (4,)), [0.2 * math.log(4)], rtol=1e-6)
    np.testing.assert_allclose(loss.target_entropy(3, ()), [-3.0])


def test_td_target_bootstraps_unless_terminated() -> None:
    y = loss.td_target(c([1.0, 2.0]), c([0.0, 1.0]), c([3.0, 4.0]), 0.5)
    np.testing.assert_allclose(y.numpy(), [2.5, 2.0])


def test_q_loss_is_half_the_mean_squared_error_and_holds_the_target_fixed() -> None:
    q = tf().Variable([1.0, 2.0])
    target = tf().Variable([0.0, 0.0])
    with tf().GradientTape() as tape:
        value = loss.q_loss(tf().convert_to_tensor(q), tf().convert_to_tensor(target))
    grad_q, grad_target = tape.gradient(value, [q, target])
    assert float(value) == pytest.approx(1.25)
    np.testing.assert_allclose(grad_q.numpy(), [0.5, 1.0])
    assert grad_target is None


def test_taken_branch_value_averages_the_chosen_actions_over_branches() -> None:
    values = c([[1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 20.0, 30.0, 40.0, 50.0]])
    actions = tf().constant([[1, 2], [0, 0]], tf().int32)
    np.testing.assert_allclose(loss.taken_branch_value(values, actions, (2, 3)).numpy(), [3.5, 20.0])
    no_branches = loss.taken_branch_value(c([[7.0], [8.0]]), tf().zeros([2, 0], tf().int32), ())
    np.testing.assert_allclose(no_branches.numpy(), [7.0, 8.0])


def test_expected_branch_value_is_the_mean_over_branches_of_the_policy_weighted_sum() -> None:
    probs = c([[0.25, 0.75, 0.5, 0.5, 0.0]])
    values = c([[4.0, 8.0, 2.0, 4.0, 100.0]])
    np.testing.assert_allclose(loss.expected_branch_value(probs, values, (2, 3)).numpy(), [5.0])
    np.testing.assert_allclose(loss.expected_branch_value(c(np.zeros((1, 0))), c([[6.0]]), ()).numpy(), [6.0])


def test_soft_value_subtracts_the_temperature_weighted_log_probabilities() -> None:
    v = loss.soft_value(c([5.0, 1.0]), c([[-1.0, -0.5], [0.0, 0.0]]), c([0.1, 0.2]))
    np.testing.assert_allclose(v.numpy(), [5.2, 1.0], rtol=1e-6)


def test_policy_loss_is_minus_the_mean_soft_value_with_alpha_held_fixed() -> None:
    alpha = tf().Variable([0.1, 0.2])
    with tf().GradientTape() as tape:
        value = loss.policy_loss(c([5.0, 1.0]), c([[-1.0, -0.5], [0.0, 0.0]]), tf().convert_to_tensor(alpha))
    assert float(value) == pytest.approx(-3.1)
    assert tape.gradient(value, alpha) is None


def test_entropy_coef_loss_matches_ml_agents_and_lowers_alpha_when_entropy_is_above_target() -> None:
    log_alpha = tf().Variable([math.log(0.5), 0.0])
    terms = c([[-1.0, -0.5], [-3.0, -0.5]])
    target = c(loss.target_entropy(1, (2,)))
    with tf().GradientTape() as tape:
        value = loss.entropy_coef_loss(tf().convert_to_tensor(log_alpha), terms, target)
    # diff = terms + target = [[-2, -0.3614], [-4, -0.3614]]; loss = -mean(sum(log_alpha * diff)).
    assert float(value) == pytest.approx(-(math.log(0.5) * -2 + math.log(0.5) * -4) / 2, rel=1e-5)
    grad = tape.gradient(value, log_alpha).numpy()
    np.testing.assert_allclose(grad, [3.0, 0.5 - 0.2 * math.log(2)], rtol=1e-5)
    assert (grad > 0).all(), "entropy above target: gradient descent must lower log alpha"


def test_losses_check_ranks_on_entry() -> None:
    with pytest.raises(ValueError, match="rank-1"):
        loss.td_target(c([[1.0]]), c([0.0]), c([1.0]), 0.9)
    with pytest.raises(ValueError, match="rank-2"):
        loss.soft_value(c([1.0]), c([1.0]), c([1.0]))
