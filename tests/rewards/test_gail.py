"""GAIL (and VAIL) against ML-Agents' reward-provider bars, its losses by hand, and PPO learning from an expert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.demos.reader import DemoTransitions
from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.nn.tf_setup import tf
from asynctrainer.rewards import losses
from asynctrainer.rewards.gail import GAILSignal
from asynctrainer.rewards.signals import SignalBatch
from asynctrainer.settings import RewardSignalSettings
from asynctrainer.testing import SimpleEnvironment, record_simple_expert
from asynctrainer.testing.settings import dummy_ppo_settings

#: ML-Agents' GAIL provider specs, with vector observations only (visual ones come with the observations issue).
SPECS = {
    "continuous": BehaviorSpec((ObservationSpec((8,)), ObservationSpec((10,))), ActionSpec(2, ())),
    "multi_discrete": BehaviorSpec((ObservationSpec((50,)),), ActionSpec(0, (2, 3, 3, 3))),
    "discrete": BehaviorSpec((ObservationSpec((10,)),), ActionSpec(0, (20,))),
}
ROWS = 1000


def random_rows(spec: BehaviorSpec, seed: int) -> DemoTransitions:
    """ML-Agents' provider tests: one random row (observations, actions, done) repeated ``ROWS`` times."""
    rng = np.random.default_rng(seed)
    a = spec.action_spec
    discrete = [rng.integers(b) for b in a.discrete_branches]
    return DemoTransitions(
        [
            np.repeat(rng.standard_normal((1, *o.shape)), ROWS, axis=0).astype(np.float32)
            for o in spec.observation_specs
        ],
        np.repeat(rng.uniform(-1, 1, (1, a.continuous_size)), ROWS, axis=0).astype(np.float32),
        np.repeat(np.array([discrete], np.int32).reshape(1, -1), ROWS, axis=0),
        np.zeros(ROWS, np.float32),
        np.repeat(rng.random(1) < 0.5, ROWS),
    )


def as_batch(rows: DemoTransitions, spec: BehaviorSpec) -> SignalBatch:
    obs = np.concatenate([o.reshape(ROWS, -1) for o in rows.obs], axis=1)
    return SignalBatch.create(obs, obs, rows.continuous, rows.discrete, spec.action_spec, rows.done)


def signal(spec: BehaviorSpec, **settings: Any) -> GAILSignal:
    # ML-Agents' provider tests: learning rate 5e-3.
    gail = RewardSignalSettings(demo_path="unused.demo", learning_rate=5e-3, **settings)
    return GAILSignal(spec, gail, seed=1, expert=random_rows(spec, 0), rng=np.random.default_rng(0))


def estimates(gail: GAILSignal, batch: SignalBatch) -> float:
    t = tf()
    d, _ = gail._estimate(
        t.constant(batch.obs), t.constant(batch.continuous), t.constant(batch.discrete_onehot), t.constant(batch.done)
    )
    return float(np.mean(d))


@pytest.mark.parametrize("use_actions", [False, True], ids=["obs", "obs+actions"])
@pytest.mark.parametrize("kind", sorted(SPECS))
def test_gail_tells_the_expert_from_the_policy(kind: str, use_actions: bool) -> None:
    spec = SPECS[kind]
    gail = signal(spec, use_actions=use_actions)
    policy = as_batch(random_rows(spec, 1), spec)
    expert = gail.expert
    expert_before, policy_before = estimates(gail, expert), estimates(gail, policy)
    whole = np.arange(ROWS, dtype=np.int32)[None]
    for _ in range(20):
        stats, finite = gail.update(policy, whole)
        assert finite
    rewards = gail.evaluate(policy)
    assert (rewards >= 0).all()
    assert estimates(gail, expert) > estimates(gail, policy)
    assert estimates(gail, expert) > expert_before and estimates(gail, policy) < policy_before
    assert set(stats) == {
        "Losses/GAIL Loss",
        "Policy/GAIL Policy Estimate",
        "Policy/GAIL Expert Estimate",
        "Policy/GAIL Grad Mag Loss",
    }


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_vail_tells_them_apart_and_adapts_beta(kind: str) -> None:
    spec = SPECS[kind]
    gail = signal(spec, use_vail=True)
    policy = as_batch(random_rows(spec, 1), spec)
    whole = np.arange(ROWS, dtype=np.int32)[None]
    for _ in range(20):
        stats, finite = gail.update(policy, whole)
        assert finite
    assert (gail.evaluate(policy) >= 0).all()
    assert estimates(gail, gail.expert) > estimates(gail, policy)
    assert "Losses/GAIL KL Loss" in stats and stats["Policy/GAIL Beta"] >= 0
    assert float(gail.beta.numpy()) >= 0 and "gail/beta" in gail.variables() and "gail_sigma" in gail.weights()


def test_gail_losses_by_hand() -> None:
    t = tf()
    expert, policy = t.constant([0.9, 0.5]), t.constant([0.2, 0.5])
    expected = -np.mean([np.log(0.9 + 1e-7) + np.log(0.8 + 1e-7), np.log(0.5 + 1e-7) + np.log(0.5 + 1e-7)])
    assert float(losses.discriminator_loss(expert, policy)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(
        losses.gail_reward(policy).numpy(), -np.log(1 - np.array([0.2, 0.5]) * (1 - 1e-7)), rtol=1e-6
    )
    gradient = t.constant([[3.0, 4.0], [0.0, 0.0]])
    assert float(losses.gradient_penalty(gradient)) == pytest.approx(
        np.mean([(5.0 - 1) ** 2, (np.sqrt(1e-7) - 1) ** 2]), rel=1e-5
    )
    mu_e, mu_p, sigma = t.constant([[1.0, 0.0]]), t.constant([[0.0, 2.0]]), t.constant([1.0, 2.0])
    terms = (
        1
        + np.log(np.array([1.0, 4.0]) + 1e-7)
        - 0.5 * np.array([1.0, 0.0])
        - 0.5 * np.array([0.0, 4.0])
        - np.array([1.0, 4.0])
    )
    assert float(losses.vail_kl(mu_e, mu_p, sigma)) == pytest.approx(-terms.sum(), rel=1e-6)


def gail_ppo(demo: Path, **extra: Any) -> Any:
    """ML-Agents' test_gail: signals = {gail} only, behavioral cloning for 1000 steps, 500 steps in all."""
    return dummy_ppo_settings(
        "1D",
        reward_signals={"gail": {"demo_path": str(demo), "encoding_size": 32, **extra}},
        behavioral_cloning={"demo_path": str(demo), "steps": 1000},
        max_steps=500,
    )


@pytest.mark.learning
@pytest.mark.parametrize("use_vail", [False, True], ids=["gail", "vail"])
@pytest.mark.parametrize("action_sizes", [(0, 1), (1, 0)], ids=["discrete", "continuous"])
async def test_ppo_with_gail_and_cloning_reaches_ml_agents_bar(
    tmp_path: Path, action_sizes: tuple[int, int], use_vail: bool
) -> None:
    demo = await record_simple_expert(SimpleEnvironment("1D", action_sizes=action_sizes, seed=7), tmp_path / "e.demo")
    env = SimpleEnvironment("1D", action_sizes=action_sizes, seed=1337)
    await Runner(gail_ppo(demo, use_vail=use_vail, use_actions=True), env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("1D") > 0.9
