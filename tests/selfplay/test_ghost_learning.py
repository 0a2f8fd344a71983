"""Self-play reaches ML-Agents' ghost-trainer bars on SimpleEnvironment (its ``test_simple_ghost*`` cases).

The teams do not play each other here: each solves its own copy of the 1-D task, so a team
reaches the bar only while it learns or plays a recent snapshot of the learner, which is what
these tests check.
"""

from __future__ import annotations

from typing import Any

import pytest

from asynctrainer import Runner
from asynctrainer.testing.settings import dummy_ppo_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

pytestmark = pytest.mark.learning

BAR = 0.9


async def run_ghost(env_names: list[str], self_play: dict[str, Any], max_steps: int) -> tuple[dict[str, float], Runner]:
    env = SimpleEnvironment(env_names, action_sizes=(0, 1), seed=1337)
    names = sorted({n.split("?")[0] for n in env_names})
    runner = Runner(
        dummy_ppo_settings(*names, self_play=self_play, max_steps=max_steps), env, seed=1337, stats_writers=[]
    )
    await runner.run()
    return {name: env.mean_final_reward(name) for name in env_names}, runner


async def test_simple_ghost() -> None:
    rewards, runner = await run_ghost(
        ["1D?team=0", "1D?team=1"],
        {"play_against_latest_model_ratio": 1.0, "save_steps": 2000, "swap_steps": 2000},
        2500,
    )
    assert all(r > BAR for r in rewards.values()), rewards
    assert runner.ghosts["1D"].ghost_step > 2000  # the other team played the whole time


async def test_simple_ghost_fails_when_the_other_team_never_gets_the_learned_policy() -> None:
    rewards, _ = await run_ghost(
        ["1D?team=0", "1D?team=1"],
        {"play_against_latest_model_ratio": 1.0, "save_steps": 2000, "swap_steps": 4000},
        2500,
    )
    assert rewards["1D?team=0"] > BAR > rewards["1D?team=1"], rewards


async def test_simple_asymm_ghost() -> None:
    rewards, runner = await run_ghost(
        ["1D?team=0", "1DOpp?team=1"],
        {"play_against_latest_model_ratio": 1.0, "save_steps": 10000, "swap_steps": 10000, "team_change": 400},
        4000,
    )
    assert all(r > BAR for r in rewards.values()), rewards
    assert runner.trainers["1D"].step > 4000 and runner.trainers["1DOpp"].step > 4000


async def test_simple_asymm_ghost_fails_against_old_snapshots() -> None:
    rewards, _ = await run_ghost(
        ["1D?team=0", "1DOpp?team=1"],
        {"play_against_latest_model_ratio": 0.0, "save_steps": 5000, "swap_steps": 5000, "team_change": 2000},
        3000,
    )
    assert min(rewards.values()) < BAR < max(rewards.values()), rewards
