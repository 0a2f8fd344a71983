"""SAC with learned reward signals: one critic stream per signal, checkpoints, and GAIL with cloning on 1D."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.testing import SimpleEnvironment, record_simple_expert
from tests.rewards.test_ppo_with_signals import SPEC, trajectory


def sac(signals: dict[str, Any], **extra: Any) -> Any:
    """ML-Agents' dummy SAC config."""
    cfg = {
        "trainer_type": "sac",
        "hyperparameters": {
            "learning_rate": 5e-3,
            "batch_size": 8,
            "buffer_init_steps": 0,
            "buffer_size": 5000,
            "tau": 0.01,
            "init_entcoef": 0.01,
        },
        "network_settings": {"hidden_units": 16, "num_layers": 1},
        "reward_signals": signals,
        "summary_freq": 500,
        "max_steps": 1000,
        **extra,
    }
    return run_settings_from_dict({"behaviors": {"1D": cfg}})


def make_trainer(signals: dict[str, Any], seed: int = 0) -> Any:
    from asynctrainer.sac.trainer import SACTrainer

    trainer = SACTrainer("1D", sac(signals).trainer_settings_for("1D"), seed=seed)
    trainer.add_policy("1D", trainer.create_policy("1D", SPEC))
    return trainer


def update(trainer: Any, rng: np.random.Generator) -> dict[str, float]:
    for i in range(4):
        trainer._store_trajectory(trajectory(rng, agent=str(i), ends=i % 2 == 0))
    trainer._step += 64  # gradient steps are owed by the trainer step (ML-Agents' rule)
    stats: dict[str, float] = trainer._update_policy()
    return stats


def test_one_critic_stream_per_signal_with_ml_agents_stat_names() -> None:
    trainer = make_trainer({"extrinsic": {}, "curiosity": {"strength": 0.02}, "rnd": {"gamma": 0.9}})
    assert [s.key for s in trainer.streams] == ["extrinsic", "curiosity", "rnd"]
    assert trainer.nets.q1.head.units == 3 * 2  # three streams of the two discrete actions
    stats = update(trainer, np.random.default_rng(0))
    for name in ("Extrinsic", "Curiosity", "Rnd"):
        assert np.isfinite(stats[f"Policy/{name} Value"])
    for name in ("Losses/Curiosity Forward Loss", "Losses/RND Loss", "Policy/Rnd Reward", "Losses/Value Loss"):
        assert np.isfinite(stats[name])
    assert stats["Policy/Curiosity Reward"] == 0.0  # no curiosity before its first update
    assert update(trainer, np.random.default_rng(1))["Policy/Curiosity Reward"] > 0


def test_sac_signals_are_checkpointed_and_restored() -> None:
    signals = {"extrinsic": {}, "rnd": {"network_settings": {"normalize": True, "hidden_units": 8}}}
    trainer = make_trainer(signals)
    update(trainer, np.random.default_rng(0))
    state = trainer.get_state()
    assert any(k.startswith("algo/weights/rnd/rnd_predictor_0") for k in state)
    assert "algo/normalizer/rnd/mean" in state and any(k.startswith("algo/optimizer/rnd/") for k in state)
    fresh = make_trainer(signals, seed=4)
    fresh.set_state(state)
    restored = fresh.get_state()
    for key, value in state.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)


@pytest.mark.learning
@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_sac_with_gail_and_cloning_reaches_ml_agents_bar(tmp_path: Path, action_sizes: tuple[int, int]) -> None:
    """ML-Agents' test_gail for SAC: signals = {gail} only, behavioral cloning for 1000 steps."""
    demo = await record_simple_expert(SimpleEnvironment("1D", action_sizes=action_sizes, seed=7), tmp_path / "e.demo")
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    settings = sac(
        {"gail": {"demo_path": str(demo), "encoding_size": 32, "use_actions": True}},
        behavioral_cloning={"demo_path": str(demo), "steps": 1000},
        max_steps=500,
    )
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9
