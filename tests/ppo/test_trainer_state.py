"""PPO's trainer state: a non-finite update fails without publishing or saving; bad state contents are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import CheckpointLoadError, CheckpointSaveError, UpdateError
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.settings import run_settings_from_dict

pytest.importorskip("tensorflow")

SPEC = BehaviorSpec((ObservationSpec((3,)),), ActionSpec.create_discrete((2,)))


def make_trainer(seed: int = 0, signals: dict[str, Any] | None = None) -> Any:
    from asynctrainer.ppo.trainer import PPOTrainer

    behavior: dict[str, Any] = {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 8, "buffer_size": 16},
        "network_settings": {"hidden_units": 8, "num_layers": 1, "normalize": True},
        "max_steps": 1000,
    }
    if signals is not None:
        behavior["reward_signals"] = {"extrinsic": {}, **signals}
    settings = run_settings_from_dict({"behaviors": {"b": behavior}})
    trainer = PPOTrainer("b", settings.trainer_settings_for("b"), seed=seed)
    trainer.add_policy("b", trainer.create_policy("b", SPEC))
    return trainer


def trajectory(n: int, rng: np.random.Generator, reward: float | None = None) -> Trajectory:
    rewards = rng.normal(size=n).astype(np.float32)
    if reward is not None:
        rewards[-1] = np.float32(reward)
    return Trajectory(
        behavior_name="b",
        agent_id="0",
        obs=rng.normal(size=(n, 3)).astype(np.float32),
        next_obs=rng.normal(size=3).astype(np.float32),
        actions_continuous=np.zeros((n, 0), np.float32),
        actions_discrete=rng.integers(0, 2, (n, 1)).astype(np.int32),
        log_probs=np.full(n, np.log(0.5), np.float32),
        entropies=np.zeros(n, np.float32),
        rewards=rewards,
        action_masks=None,
        policy_versions=np.zeros(n, np.int64),
        terminated=True,
        episode_return=0.0,
        episode_length=n,
    )


def trained(trainer: Any, updates: int = 2) -> Any:
    rng = np.random.default_rng(0)
    for _ in range(updates):
        while not trainer._accept(trajectory(8, rng)):
            pass
        trainer._update_policy()
    return trainer


async def test_a_non_finite_loss_fails_the_update_and_nothing_is_published_or_saved() -> None:
    trainer = make_trainer()
    slot = PolicySlot("b")
    trainer.publish_policy_queue(slot)
    first = await trainer.initial_snapshot()
    rng = np.random.default_rng(1)
    trainer._accept(trajectory(8, rng))
    # A reward that is finite as float64 and infinite as float32: the value loss becomes NaN.
    assert trainer._accept(trajectory(8, rng, reward=np.float32(np.inf)))
    with pytest.raises(UpdateError) as info:
        await trainer._update()
    message = str(info.value)
    assert "behavior 'b'" in message and "step 16" in message and "NaN or infinite" in message
    assert info.value.behavior_name == "b" and info.value.step == 16
    assert slot.latest() is first and trainer.version == 0
    with pytest.raises(CheckpointSaveError, match="update failed"):
        await trainer.checkpoint_state()


async def test_a_non_finite_loss_inside_the_train_function_fails_the_update() -> None:
    trainer = make_trainer()
    # The actor's head gives NaN log-probs; the critic, and so the advantages, stay finite.
    await _poisoned_update_fails(trainer, trainer.net.named_variables()["discrete_head/kernel"], np.nan)


@pytest.mark.parametrize("signal", ["curiosity", "rnd"])
async def test_a_reward_signal_gone_non_finite_fails_the_update(signal: str) -> None:
    trainer = make_trainer(signals={signal: {"strength": 0.1}})
    (learned,) = trainer.signals
    kernel = next(v for k, v in learned.weights().items() if k.endswith("kernel"))
    await _poisoned_update_fails(trainer, kernel, np.inf)


async def _poisoned_update_fails(trainer: Any, variable: Any, value: float) -> None:
    """With ``variable`` all ``value`` after the first policy, the first update fails naming the
    behavior and its step, and the first policy stays published."""
    slot = PolicySlot("b")
    trainer.publish_policy_queue(slot)
    first = await trainer.initial_snapshot()
    variable.assign(np.full(variable.shape, value, np.float32))
    rng = np.random.default_rng(2)
    while not trainer._accept(trajectory(8, rng)):
        pass
    with pytest.raises(UpdateError, match="NaN or infinite") as info:
        await trainer._update()
    assert info.value.behavior_name == "b" and info.value.step == 16 and slot.latest() is first


def test_a_finite_update_passes_the_check() -> None:
    trainer = trained(make_trainer())
    assert all(np.isfinite(v).all() for k, v in trainer.get_state().items() if k.startswith("algo/weights/"))


def corrupted(change: str) -> tuple[Any, dict[str, np.ndarray]]:
    state = trained(make_trainer()).get_state()
    if change == "slot shape":
        key = sorted(k for k in state if k.startswith("algo/optimizer/") and state[k].ndim == 2)[0]
        state[key] = np.zeros((state[key].shape[0] + 1, state[key].shape[1]), state[key].dtype)
    elif change == "rng":
        state["algo/rng"] = np.frombuffer(b"not json {", np.uint8)
    elif change == "rng state":
        state["algo/rng"] = np.frombuffer(b'{"bit_generator": "PCG64", "state": 3}', np.uint8)
    elif change == "nan weights":
        state["algo/weights/actor_0/kernel"] = np.full_like(state["algo/weights/actor_0/kernel"], np.nan)
    elif change == "missing slot":
        del state[sorted(k for k in state if k.startswith("algo/optimizer/"))[-1]]
    elif change == "normalizer":
        state["algo/normalizer/mean"] = np.zeros(5)
    return make_trainer(seed=9), state


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("slot shape", "optimizer/"),
        ("rng", "'rng'"),
        ("rng state", "'rng'"),
        ("nan weights", "'weights/actor_0/kernel'"),
        ("missing slot", "optimizer variables"),
        ("normalizer", "'normalizer/mean'"),
    ],
)
def test_a_state_that_does_not_fit_is_refused_naming_the_field_and_nothing_is_assigned(change: str, field: str) -> None:
    fresh, state = corrupted(change)
    before = fresh.get_state()
    with pytest.raises(CheckpointLoadError) as info:
        fresh.set_state(state)
    message = str(info.value)
    assert field in message and "\n" not in message and len(message) < 400, message
    after = fresh.get_state()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_non_finite_weights_are_refused_by_a_weights_only_load_too() -> None:
    fresh, state = corrupted("nan weights")
    with pytest.raises(CheckpointLoadError, match="NaN or infinite"):
        fresh.set_state(state, weights_only=True)
