"""PPO with curiosity and RND: value heads per signal, stats, checkpoints, and ML-Agents' bar on SimpleEnvironment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.runtime.stats import MemoryWriter
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.testing.fakes import random_trajectory
from asynctrainer.testing.settings import dummy_ppo_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

SPEC = BehaviorSpec((ObservationSpec((3,)),), ActionSpec(1, (2,)))


def settings(signals: dict[str, Any], **extra: Any) -> Any:
    return dummy_ppo_settings("1D", reward_signals=signals, **extra)


def make_trainer(signals: dict[str, Any], seed: int = 0) -> Any:
    from asynctrainer.ppo.trainer import PPOTrainer

    trainer = PPOTrainer("1D", settings(signals).trainer_settings_for("1D"), seed=seed)
    trainer.add_policy("1D", trainer.create_policy("1D", SPEC))
    return trainer


def trajectory(rng: np.random.Generator, n: int = 16, agent: str = "0", ends: bool = True) -> Trajectory:
    return random_trajectory(n, rng=rng, ends=ends, behavior_name="1D", agent_id=agent)


def update(trainer: Any, rng: np.random.Generator) -> dict[str, float]:
    for i in range(4):
        trainer._store_trajectory(trajectory(rng, agent=str(i % 2), ends=i >= 2))
    stats: dict[str, float] = trainer._update_policy()
    return stats


def test_one_value_head_per_signal_and_ml_agents_stat_names() -> None:
    trainer = make_trainer({"extrinsic": {}, "curiosity": {"strength": 0.02}, "rnd": {}})
    assert trainer.net.value_head.units == 3
    stats = update(trainer, np.random.default_rng(0))
    for name in ("Extrinsic", "Curiosity", "Rnd"):
        assert np.isfinite(stats[f"Policy/{name} Value Estimate"])
    for name in ("Losses/Curiosity Forward Loss", "Losses/Curiosity Inverse Loss", "Losses/RND Loss"):
        assert stats[name] > 0
    # Episodes of agents 0 and 1 ended in this buffer: their summed signal rewards are reported.
    assert stats["Policy/Curiosity Reward"] == 0.0  # no curiosity before its first update
    assert stats["Policy/Rnd Reward"] > 0
    second = update(trainer, np.random.default_rng(1))
    assert second["Policy/Curiosity Reward"] > 0


def test_signals_without_extrinsic_ignore_the_env_reward() -> None:
    trainer = make_trainer({"rnd": {}})
    assert trainer.net.value_head.units == 1
    stats = update(trainer, np.random.default_rng(0))
    assert "Policy/Extrinsic Value Estimate" not in stats and "Policy/Rnd Value Estimate" in stats


def test_signal_networks_and_optimizers_are_checkpointed_and_restored() -> None:
    trainer = make_trainer({"extrinsic": {}, "curiosity": {}, "rnd": {}})
    update(trainer, np.random.default_rng(0))
    state = trainer.get_state()
    assert any(k.startswith("algo/weights/curiosity/curiosity_encoder_0") for k in state)
    assert any(k.startswith("algo/weights/rnd/rnd_target_0") for k in state)
    assert any(k.startswith("algo/optimizer/rnd/") for k in state)
    fresh = make_trainer({"extrinsic": {}, "curiosity": {}, "rnd": {}}, seed=5)
    fresh.set_state(state)
    restored = fresh.get_state()
    assert sorted(restored) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)
    assert fresh.signals[0].updates == trainer.signals[0].updates > 0
    batch = fresh._signal_batch([trajectory(np.random.default_rng(3))], trajectory(np.random.default_rng(3)).obs)
    np.testing.assert_allclose(fresh.signals[0].evaluate(batch), trainer.signals[0].evaluate(batch), rtol=1e-6)


@pytest.mark.learning
@pytest.mark.parametrize("signal", ["curiosity", "rnd"])
async def test_ppo_with_a_learned_signal_still_reaches_ml_agents_bar(signal: str) -> None:
    """ML-Agents has no end-to-end curiosity or RND test; adding one must not stop PPO from solving 1D."""
    env = SimpleEnvironment("1D", action_sizes=(0, 1), seed=1337)
    keep = MemoryWriter()
    run = settings({"extrinsic": {}, signal: {"strength": 0.01, "network_settings": {"hidden_units": 32}}})
    await Runner(run, env, seed=1337, stats_writers=[keep]).run()
    assert env.mean_final_reward("1D") > 0.9
    name = "Curiosity" if signal == "curiosity" else "Rnd"
    assert any(f"Policy/{name} Reward" in r.values for r in keep.records)


def test_a_signal_with_normalize_keeps_and_checkpoints_its_own_statistics() -> None:
    signals = {"extrinsic": {}, "rnd": {"network_settings": {"normalize": True, "hidden_units": 16}}}
    trainer = make_trainer(signals)
    rnd = trainer.signals[0]
    assert rnd.normalizer is not None and trainer.normalizer is None  # the policy's own setting is apart
    update(trainer, np.random.default_rng(0))
    assert rnd.normalizer.count == 64  # the buffer's observations, evaluated once
    state = trainer.get_state()
    assert {"algo/normalizer/rnd/count", "algo/normalizer/rnd/mean", "algo/normalizer/rnd/m2"} <= set(state)
    fresh = make_trainer(signals, seed=3)
    fresh.set_state(state)
    np.testing.assert_array_equal(fresh.signals[0].normalizer.mean, rnd.normalizer.mean)
