"""Environment parameters and curricula: ML-Agents' lesson rule, sampler seeds and the config's forms."""

from __future__ import annotations

from typing import Any

import pytest

from asynctrainer.errors import SettingsError
from asynctrainer.runtime.curriculum import EnvironmentParameters
from asynctrainer.settings import run_settings_from_dict


def parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` as the settings validate and store it."""
    out = run_settings_from_dict({"environment_parameters": raw}).environment_parameters
    assert out is not None
    return out


def lesson(value: Any, **criteria: Any) -> dict[str, Any]:
    return {"name": f"at {value}", "value": value, "completion_criteria": {"behavior": "Walker", **criteria}}


def test_constants_and_samplers_get_seeds_counted_across_every_lesson() -> None:
    uniform = {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0, "max_value": 1}}
    seeded = {"sampler_type": "gaussian", "sampler_parameters": {"mean": 0, "st_dev": 1, "seed": 7}}
    raw = {"gravity": 9.81, "wall": {"curriculum": [lesson(1.0), lesson(2.0), {"value": uniform}]}, "mass": seeded}
    manager = EnvironmentParameters(parameters(raw), run_seed=100)
    assert manager.values() == {"gravity": 9.81, "wall": 1.0, "mass": seeded}  # the seed of its own is kept
    manager.lessons["wall"] = 2
    # gravity is lesson k=0, the wall's lessons k=1..3: the sampler is the fourth, so its seed is 100 + 3.
    assert manager.values()["wall"] == {
        "sampler_type": "uniform",
        "sampler_parameters": {"min_value": 0, "max_value": 1, "seed": 103},
    }


def test_progress_advances_past_the_threshold_after_min_lesson_length_episodes() -> None:
    raw = {"wall": {"curriculum": [lesson(1.0, measure="progress", threshold=0.5, min_lesson_length=2), lesson(2.0)]}}
    manager = EnvironmentParameters(parameters(raw), run_seed=0)
    assert manager.update({"Walker": 0.5}, {"Walker": [1.0, 1.0]}) == (False, False)  # not past 0.5
    assert manager.update({"Walker": 0.6}, {"Walker": [1.0]}) == (False, False)  # one episode of two
    assert manager.update({"Walker": 0.6}, {"Walker": [1.0, 1.0]}) == (True, False)
    assert manager.lessons == {"wall": 1} and manager.values() == {"wall": 2.0}
    assert manager.update({"Walker": 1.0}, {"Walker": [9.0] * 5}) == (False, False)  # the last lesson stays


def test_reward_is_smoothed_as_mlagents_does_and_one_lesson_advances_per_call() -> None:
    raw = {"wall": {"curriculum": [lesson(1.0, threshold=0.5), lesson(2.0, threshold=0.5), lesson(3.0)]}}
    manager = EnvironmentParameters(parameters(raw), run_seed=0)
    # min_lesson_length 0: the newest episode alone. 0.25 · 0 + 0.75 · 0.6 = 0.45, not above 0.5.
    assert manager.update({"Walker": 0.0}, {"Walker": [0.6, -5.0]}) == (False, False)
    # 0.25 · 0.45 + 0.75 · 0.6 = 0.5625 > 0.5: one lesson, though the next one's threshold is met too.
    assert manager.update({"Walker": 0.0}, {"Walker": [0.6]}) == (True, False)
    assert manager.lessons == {"wall": 1}
    assert manager.update({"Walker": 0.0}, {"Walker": []}) == (False, False)  # no episode: no measure


def test_without_smoothing_the_mean_of_the_window_counts() -> None:
    first = lesson(1.0, threshold=1.0, min_lesson_length=3, signal_smoothing=False)
    manager = EnvironmentParameters(parameters({"wall": {"curriculum": [first, lesson(2.0)]}}), run_seed=0)
    assert manager.window("Walker") == 3
    assert manager.update({"Walker": 0.0}, {"Walker": [2.0, 1.0, 0.0, 99.0]}) == (False, False)  # mean 1.0
    assert manager.update({"Walker": 0.0}, {"Walker": [2.0, 1.5, 0.0]}) == (True, False)


def test_restore_continues_at_a_saved_lesson() -> None:
    manager = EnvironmentParameters(parameters({"wall": {"curriculum": [lesson(1.0), lesson(2.0)]}}), run_seed=0)
    manager.restore({"wall": 1, "gone": 4})
    assert manager.values() == {"wall": 2.0}
    manager.restore({"wall": 9})
    assert manager.lessons == {"wall": 1}  # clamped to the last lesson


def test_the_0_18_lesson_form_is_read() -> None:
    raw = {
        "wall": {
            "curriculum": [{"Lesson0": {"value": 1.5, "completion_criteria": {"behavior": "W"}}}, {"L1": {"value": 2}}]
        }
    }
    assert parameters(raw)["wall"]["curriculum"][0] == {
        "name": "Lesson0",
        "value": 1.5,
        "completion_criteria": {"behavior": "W"},
    }


@pytest.mark.parametrize(
    ("curriculum", "where", "text"),
    [
        ([{"name": "a", "value": 1.0}, {"value": 2.0}], "curriculum.0", "completion_criteria missing"),
        (
            [lesson(1.0, measure="elo"), {"value": 2.0}],
            "curriculum.0.completion_criteria.measure",
            "reward or progress",
        ),
        ([lesson(1.0, measure="progress", threshold=2.0), {"value": 2.0}], "threshold", "in [0, 1]"),
        ([lesson(1.0, min_lesson_length=-1), {"value": 2.0}], "min_lesson_length", ">= 0"),
        (
            [{"name": "a", "value": 1.0, "completion_criteria": {"threshold": 1}}, {"value": 2}],
            "completion_criteria",
            "behavior",
        ),
        ([{"name": "a"}], "curriculum.0", "value missing"),
        ([], "curriculum", "non-empty list"),
    ],
)
def test_bad_lessons_are_refused_naming_the_key(curriculum: list[Any], where: str, text: str) -> None:
    with pytest.raises(SettingsError) as info:
        run_settings_from_dict({"environment_parameters": {"wall": {"curriculum": curriculum}}})
    assert where in str(info.value.key_path) and text in str(info.value)


def test_gymnasium_copies_get_the_parameters_as_reset_options_drawn_per_episode() -> None:
    gymnasium = pytest.importorskip("gymnasium")
    import numpy as np

    from asynctrainer.envs.gymnasium_env import GymnasiumEnv

    seen: list[dict[str, Any] | None] = []

    class Recorder(gymnasium.Env):  # type: ignore[misc,type-arg]
        observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        action_space = gymnasium.spaces.Discrete(2)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
            super().reset(seed=seed)
            seen.append(options)
            return np.zeros(1, np.float32), {}

        def step(self, action: Any) -> Any:
            return np.zeros(1, np.float32), 0.0, True, False, {}  # every step ends the episode

    env = GymnasiumEnv(Recorder, num_envs=1)
    env._reset_sync()
    assert seen == [None]  # no parameters: reset as gymnasium would
    uniform = {"sampler_type": "uniform", "sampler_parameters": {"min_value": 2.0, "max_value": 3.0, "seed": 5}}
    env.set_environment_parameters({"gravity": 9.81, "mass": uniform})
    env._step_sync({env.behavior_name: _one_action(env)})  # the autoreset draws the next episode's values
    env._step_sync({env.behavior_name: _one_action(env)})
    first, second = seen[1], seen[2]
    assert first is not None and second is not None
    assert first["gravity"] == second["gravity"] == 9.81
    assert 2.0 <= first["mass"] < 3.0 and 2.0 <= second["mass"] < 3.0 and first["mass"] != second["mass"]


def _one_action(env: Any) -> Any:
    import numpy as np

    from asynctrainer.envs.spec import ActionBatch

    return ActionBatch(np.zeros((1, 0), np.float32), np.zeros((1, 1), np.int32), np.zeros(1, np.int64))


async def test_a_game_session_host_reads_and_awaits_the_parameters() -> None:
    import asyncio

    from asynctrainer.envs.game_session import GameSession
    from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec

    session = GameSession({"B": BehaviorSpec((ObservationSpec((1,)),), ActionSpec.create_discrete((2,)))})
    assert session.environment_parameters == {}
    waiting = asyncio.ensure_future(session.environment_parameters_changed())
    await asyncio.sleep(0)
    assert not waiting.done()
    session.set_environment_parameters({"wall": 2.0})
    assert await asyncio.wait_for(waiting, 1.0) == {"wall": 2.0}
    assert session.environment_parameters == {"wall": 2.0}
