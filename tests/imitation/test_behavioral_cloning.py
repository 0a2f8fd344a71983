"""Behavioral cloning: the expert recorder, the loss, the batching, and learning from an expert alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer import Runner, load_demonstration
from asynctrainer.errors import DemonstrationError
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.testing import SimpleEnvironment, record_simple_expert
from asynctrainer.testing.settings import dummy_ppo_settings


@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0), (1, 1)], ids=["discrete", "continuous", "hybrid"])
async def test_the_expert_recording_holds_the_optimal_action_at_each_observation(
    tmp_path: Path, action_sizes: tuple[int, int]
) -> None:
    env = SimpleEnvironment("1D", action_sizes=action_sizes, num_agents=2, seed=3)
    path = await record_simple_expert(env, tmp_path / "expert.demo", steps=100)
    demo = load_demonstration(path)
    assert demo.spec == env.behavior_specs["1D"] and demo.brain_name == "1D?team=0"
    rows = demo.transitions()
    goal = rows.obs[0][:, 0]
    if action_sizes[1]:
        assert ((rows.discrete[:, 0] == 1) == (goal > 0)).all()
    if action_sizes[0]:
        np.testing.assert_array_equal(rows.continuous[:, 0], goal)
    # The optimal 1-D episode at step 0.2 is 5 steps: 20 episodes per agent in 100 steps.
    assert demo.number_episodes == 2 * 20 + 1
    finished = rows.reward[rows.done]
    assert finished == pytest.approx(np.full(len(finished), 1.06), abs=1e-5)  # 1 + 6 × 0.01 at the goal


def ppo(demo: Path, *, bc: dict[str, Any] | None = None, **extra: Any) -> Any:
    return dummy_ppo_settings(
        "1D", behavioral_cloning={"demo_path": str(demo), "steps": 1000, **(bc or {})}, max_steps=500, **extra
    )


def make_trainer(settings: Any, spec: Any) -> Any:
    from asynctrainer.ppo.trainer import PPOTrainer

    trainer = PPOTrainer("1D", settings.trainer_settings_for("1D"), seed=0)
    trainer.add_policy("1D", trainer.create_policy("1D", spec))
    return trainer


async def test_cloning_batches_learning_rate_and_loss(tmp_path: Path) -> None:
    env = SimpleEnvironment("1D", action_sizes=(1, 1), seed=3)
    demo = await record_simple_expert(env, tmp_path / "expert.demo", steps=100)
    trainer = make_trainer(ppo(demo, bc={"samples_per_update": 40, "batch_size": 16}), env.behavior_specs["1D"])
    bc = trainer.bc
    assert len(bc) == 100  # one transition per decision: each is followed by a decision or a terminal
    # 3 epochs (ML-Agents' default) of min(100 // 16, 40 // 16) = 2 batches of 16.
    assert bc.minibatches().shape == (6, 16)
    assert bc.learning_rate(0) == pytest.approx(5e-3) and bc.learning_rate(500) == pytest.approx(2.5e-3)
    first, finite = bc.update(0, None)
    assert finite and first["Losses/Pretraining Loss"] > 0
    for _ in range(30):
        later, _ = bc.update(0, None)
    assert later["Losses/Pretraining Loss"] < first["Losses/Pretraining Loss"]
    assert bc.update(1000, None)[0] == {"Losses/Pretraining Loss": 0.0}  # decayed to nothing: no more cloning
    assert any(k.startswith("algo/optimizer/bc/") for k in trainer.get_state())


async def test_a_demonstration_of_other_specs_is_refused_naming_both(tmp_path: Path) -> None:
    demo = await record_simple_expert(SimpleEnvironment("1D", action_sizes=(0, 1)), tmp_path / "d.demo", steps=20)
    with pytest.raises(DemonstrationError, match=r"discrete branches \[2\] and the behavior has 1 continuous"):
        make_trainer(ppo(demo), SimpleEnvironment("1D", action_sizes=(1, 0)).behavior_specs["1D"])


@pytest.mark.learning
@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_ppo_learns_from_the_expert_alone(tmp_path: Path, action_sizes: tuple[int, int]) -> None:
    """The env's reward has strength 0: only cloning can teach the policy to reach the goal."""
    demo = await record_simple_expert(SimpleEnvironment("1D", action_sizes=action_sizes, seed=7), tmp_path / "e.demo")
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    settings = ppo(demo, reward_signals={"extrinsic": {"strength": 0.0}})
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9


def sac(demo: Path, **extra: Any) -> Any:
    """ML-Agents' dummy SAC config, with behavioral cloning for 1000 steps."""
    cfg = {
        "trainer_type": "sac",
        "hyperparameters": {
            "learning_rate": 5e-3,
            "batch_size": 8,
            "buffer_init_steps": 100,
            "buffer_size": 5000,
            "tau": 0.01,
            "init_entcoef": 0.01,
        },
        "network_settings": {"hidden_units": 16, "num_layers": 1},
        "behavioral_cloning": {"demo_path": str(demo), "steps": 1000},
        "summary_freq": 500,
        "max_steps": 1000,
        **extra,
    }
    return run_settings_from_dict({"behaviors": {"1D": cfg}})


@pytest.mark.learning
@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_sac_learns_from_the_expert_alone(tmp_path: Path, action_sizes: tuple[int, int]) -> None:
    demo = await record_simple_expert(SimpleEnvironment("1D", action_sizes=action_sizes, seed=7), tmp_path / "e.demo")
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    settings = sac(demo, reward_signals={"extrinsic": {"strength": 0.0}})
    result = await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert result.updates["1D"] > 0
    assert env.mean_final_reward("1D") > 0.9
