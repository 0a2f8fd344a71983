"""Multi-discrete actions with masks, hybrid actions and two behaviors learn (PPO and SAC).

ML-Agents' bars on SimpleEnvironment variants: the mean of the
last five episode returns passes 0.9.
"""

from __future__ import annotations

import anyio
import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.settings import run_settings_from_dict
from asynctrainer.testing.settings import dummy_ppo_config, dummy_sac_config
from asynctrainer.testing.simple_env import SimpleEnvironment

pytestmark = pytest.mark.learning


CONFIGS = {"ppo": dummy_ppo_config, "sac": dummy_sac_config}


@pytest.mark.parametrize("trainer_type", ["ppo", "sac"])
async def test_multi_discrete_never_takes_a_masked_action_and_learns(trainer_type: str) -> None:
    # Branches of size 3: action 0 moves down, 1 up, 2 down too. Masking action 2 of branch 0
    # leaves the goal reachable, so the bar still applies; branch 1 keeps its action 2.
    env = SimpleEnvironment(
        "MD", action_sizes=(0, 2), step_size=0.8, discrete_branch_size=3, masked_actions={0: [2]}, seed=1337
    )
    settings = run_settings_from_dict({"behaviors": {"MD": CONFIGS[trainer_type]()}})
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    taken = np.concatenate(env.actions_taken["MD"])
    assert taken.shape[1] == 2
    assert not (taken[:, 0] == 2).any(), "a masked action was taken"
    assert (taken[:, 1] == 2).any(), "the unmasked branch never took action 2: the check above proves nothing"
    assert env.mean_final_reward("MD") > 0.9


async def test_ppo_hybrid_actions_learn() -> None:
    # Step size 0.8, as ML-Agents' hybrid tests: at 0.2 the dummy config can settle with one
    # action part against the goal (return about -0.04) on some seeds.
    env = SimpleEnvironment("Hybrid", action_sizes=(1, 1), step_size=0.8, seed=1337)
    settings = run_settings_from_dict({"behaviors": {"Hybrid": dummy_ppo_config()}})
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("Hybrid") > 0.9


async def test_sac_hybrid_actions_learn() -> None:
    # ML-Agents' test_hybrid_sac (recalled): step 0.8, batch 256, buffer 50000, no init steps, 2200 steps.
    env = SimpleEnvironment("Hybrid", action_sizes=(1, 1), step_size=0.8, seed=1337)
    config = dummy_sac_config(
        hyperparameters={"batch_size": 256, "buffer_size": 50000, "buffer_init_steps": 0}, max_steps=2200
    )
    settings = run_settings_from_dict({"behaviors": {"Hybrid": config}})
    await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert env.mean_final_reward("Hybrid") > 0.9


async def test_two_behaviors_one_ppo_one_sac_both_learn() -> None:
    env = SimpleEnvironment(["A", "B"], action_sizes=(0, 1), seed=1337)
    # Equal max_steps and the default channel: the runner stops reading a finished trainer's
    # channel (and strict_on_policy waits for a snapshot that never comes), so the env loop
    # stalls once that channel fills; the other trainer must finish within that slack. The
    # time limit turns such a stall into a failure instead of a hung test run.
    settings = run_settings_from_dict({"behaviors": {"A": dummy_ppo_config(), "B": dummy_sac_config(max_steps=3000)}})
    with anyio.fail_after(120):
        result = await Runner(settings, env, seed=1337, stats_writers=[]).run()
    assert result.updates["A"] > 0 and result.updates["B"] > 0
    assert env.mean_final_reward("A") > 0.9
    assert env.mean_final_reward("B") > 0.9
