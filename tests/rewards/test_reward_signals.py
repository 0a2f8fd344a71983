"""Curiosity and RND against ML-Agents' reward-provider bars, and their losses by hand."""

from __future__ import annotations

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.nn.tf_setup import tf
from asynctrainer.rewards import losses
from asynctrainer.rewards.curiosity import CuriositySignal
from asynctrainer.rewards.factory import create_reward_signals
from asynctrainer.rewards.rnd import RNDSignal
from asynctrainer.rewards.signals import SignalBatch
from asynctrainer.settings import RewardSignalSettings

SPECS = {
    "continuous": BehaviorSpec((ObservationSpec((10,)),), ActionSpec(5, ())),
    "multi_discrete": BehaviorSpec((ObservationSpec((10,)),), ActionSpec(0, (2, 3))),
    "discrete": BehaviorSpec((ObservationSpec((10,)),), ActionSpec(0, (2,))),
    "hybrid": BehaviorSpec((ObservationSpec((6,)), ObservationSpec((4,))), ActionSpec(2, (3,))),
}
#: ML-Agents' tests build CuriositySettings(32, 0.01) positionally: gamma 32 (unused here), strength 0.01.
SETTINGS = RewardSignalSettings(strength=0.01)


def repeated_row(spec: BehaviorSpec, n: int = 64, seed: int = 0) -> SignalBatch:
    """ML-Agents' provider tests: a buffer repeating one random (obs, next_obs, action) row."""
    rng = np.random.default_rng(seed)
    size = spec.observation_size
    a = spec.action_spec
    discrete = np.array([[rng.integers(b) for b in a.discrete_branches]], np.int32).reshape(1, -1)
    batch = SignalBatch.create(
        rng.standard_normal((1, size)).astype(np.float32),
        rng.standard_normal((1, size)).astype(np.float32),
        rng.uniform(-1, 1, (1, a.continuous_size)).astype(np.float32),
        discrete,
        a,
    )
    return SignalBatch(
        *(np.repeat(x, n, axis=0) for x in (batch.obs, batch.next_obs, batch.continuous, batch.discrete_onehot)),
        np.zeros((n, 1), np.float32),
    )


def minibatches(n: int, updates: int, size: int = 16) -> np.ndarray:
    return np.stack([np.arange(size, dtype=np.int32) % n for _ in range(updates)])


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_curiosity_reward_is_zero_before_the_first_update_then_decreases(kind: str) -> None:
    spec = SPECS[kind]
    signal = CuriositySignal(spec, SETTINGS, seed=1)
    batch = repeated_row(spec)
    assert (signal.evaluate(batch) == 0).all()  # ML-Agents: no curiosity before the first update
    signal.update(batch, minibatches(len(batch), 1))
    first = signal.evaluate(batch)
    stats, finite = signal.update(batch, minibatches(len(batch), 20))
    assert finite and set(stats) == {"Losses/Curiosity Forward Loss", "Losses/Curiosity Inverse Loss"}
    assert first.mean() > 0 and signal.evaluate(batch).mean() < first.mean()
    assert signal.updates == 21


def test_curiosity_learns_to_predict_the_continuous_action_and_the_next_state() -> None:
    spec = SPECS["continuous"]
    signal = CuriositySignal(spec, RewardSignalSettings(strength=0.1), seed=1)
    batch = repeated_row(spec)
    signal.update(batch, minibatches(len(batch), 200))
    t = tf()
    encoded = signal._encode(t.constant(batch.obs))
    next_encoded = signal._encode(t.constant(batch.next_obs))
    action, _ = signal._predict_action(encoded, next_encoded)
    assert float(np.mean((np.asarray(action) - batch.continuous) ** 2)) < 1e-3  # ML-Agents' bar
    _, predicted = signal._predict_next(
        t.constant(batch.obs), t.constant(batch.continuous), t.constant(batch.discrete_onehot)
    )
    assert float(np.mean((np.asarray(predicted) - np.asarray(next_encoded)) ** 2)) < 1e-3


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_rnd_reward_decreases_as_the_predictor_learns(kind: str) -> None:
    spec = SPECS[kind]
    signal = RNDSignal(spec, SETTINGS, seed=1)
    batch = repeated_row(spec)
    signal.update(batch, minibatches(len(batch), 1))
    first = signal.evaluate(batch)
    stats, finite = signal.update(batch, minibatches(len(batch), 100))
    assert finite and list(stats) == ["Losses/RND Loss"]
    assert signal.evaluate(batch).mean() < first.mean()


def test_rnd_target_stays_frozen() -> None:
    signal = RNDSignal(SPECS["continuous"], SETTINGS, seed=1)
    before = [np.array(v.numpy()) for layer in signal.target for v in layer.weights]
    batch = repeated_row(SPECS["continuous"])
    signal.update(batch, minibatches(len(batch), 5))
    after = [np.array(v.numpy()) for layer in signal.target for v in layer.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    predictor = [np.array(v.numpy()) for layer in signal.predictor for v in layer.weights]
    assert predictor  # and it did learn:
    signal2 = RNDSignal(SPECS["continuous"], SETTINGS, seed=1)
    assert not np.array_equal(predictor[0], np.array(signal2.predictor[0].kernel.numpy()))


def test_strength_scales_the_reward_and_caps_curiosity_at_one() -> None:
    spec = SPECS["continuous"]
    strong = CuriositySignal(spec, RewardSignalSettings(strength=1e6), seed=1)
    batch = repeated_row(spec)
    strong.update(batch, minibatches(len(batch), 1))
    assert np.allclose(strong.evaluate(batch), 1.0)  # min(f, 1/strength) · strength
    rnd = RNDSignal(spec, RewardSignalSettings(strength=0.5), seed=1)
    rnd_unit = RNDSignal(spec, RewardSignalSettings(strength=1.0), seed=1)
    np.testing.assert_allclose(rnd.evaluate(batch), 0.5 * rnd_unit.evaluate(batch), rtol=1e-6)


def test_losses_by_hand() -> None:
    t = tf()
    phi_next = t.constant([[1.0, 2.0], [0.0, 0.0]])
    predicted = t.constant([[0.0, 0.0], [1.0, -1.0]])
    np.testing.assert_allclose(losses.curiosity_forward_error(phi_next, predicted).numpy(), [2.5, 1.0])
    inverse = losses.curiosity_inverse_loss(
        t.constant([[1.0], [0.0]]),
        t.constant([[0.5], [0.0]]),
        t.constant([[1.0, 0.0], [0.0, 1.0]]),
        t.constant([[0.5, 0.5], [0.25, 0.75]]),
    )
    expected = np.mean([0.25, 0.0]) + np.mean([-np.log(0.5 + 1e-10), -np.log(0.75 + 1e-10)])
    assert float(inverse) == pytest.approx(expected, rel=1e-6)
    assert float(losses.curiosity_loss(t.constant(1.0), t.constant(2.0))) == pytest.approx(10 * (0.2 + 1.6))
    np.testing.assert_allclose(losses.prediction_error(phi_next, predicted).numpy(), [5.0, 2.0])


def test_signals_are_built_in_config_order_with_ml_agents_defaults() -> None:
    spec = SPECS["discrete"]
    signals = create_reward_signals(
        {
            "extrinsic": RewardSignalSettings(),
            "rnd": RewardSignalSettings(),
            "curiosity": RewardSignalSettings(encoding_size=16),
        },
        spec,
        seed=0,
        behavior_name="b",
        rng=np.random.default_rng(0),
    )
    assert [s.key for s in signals] == ["rnd", "curiosity"]
    rnd, curiosity = signals
    assert isinstance(rnd, RNDSignal) and rnd.learning_rate == 1e-4 and rnd.network.hidden_units == 128
    assert isinstance(curiosity, CuriositySignal) and curiosity.learning_rate == 3e-4
    assert curiosity.network.hidden_units == 16  # encoding_size, deprecated, sets the units
