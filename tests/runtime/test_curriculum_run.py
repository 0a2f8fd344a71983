"""A curriculum during a run: lessons advance by reward, their values reach the env, the lesson is a stat,
saved in training_status.json and continued by ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asynctrainer import Runner
from asynctrainer.errors import UsageError
from asynctrainer.runtime.stats import MemoryWriter
from asynctrainer.testing.settings import dummy_ppo_settings
from asynctrainer.testing.simple_env import SimpleEnvironment

pytest.importorskip("tensorflow")

#: SimpleEnvironment's step size: 0.5 (easy: two steps to a goal), then ML-Agents' 0.2 once the
#: smoothed mean return of the last 5 episodes exceeds 0.9.
CURRICULUM = {
    "step_size": {
        "curriculum": [
            {
                "name": "long strides",
                "value": 0.5,
                "completion_criteria": {"behavior": "1D", "threshold": 0.9, "min_lesson_length": 5},
            },
            {"name": "short strides", "value": 0.2},
        ]
    },
    "gravity": 9.81,
}


def settings(max_steps: int, parameters: dict[str, Any] = CURRICULUM) -> Any:
    return dummy_ppo_settings(
        "1D",
        max_steps=max_steps,
        summary_freq=20,
        checkpoint_interval=500,
        run={"environment_parameters": parameters},
    )


async def test_lessons_advance_by_reward_reach_the_env_and_resume(tmp_path: Path) -> None:
    env = SimpleEnvironment("1D", seed=1337)
    keep = MemoryWriter()
    runner = Runner(settings(3000), env, seed=1337, results_dir=tmp_path, run_id="run", stats_writers=[keep])
    await runner.run()
    assert runner.environment_parameters.lessons == {"step_size": 1, "gravity": 0}
    assert env.parameters_received[0] == {"step_size": 0.5, "gravity": 9.81}
    assert env.parameters_received[-1] == {"step_size": 0.2, "gravity": 9.81} and env.step_size == 0.2
    lessons = [r.values["Environment/Lesson Number/step_size"].mean for r in keep.records if r.category == "1D"]
    assert lessons[0] == 0.0 and lessons[-1] == 1.0, lessons
    assert env.mean_final_reward("1D") > 0.9  # and it learns the harder lesson too
    status = json.loads((tmp_path / "run" / "run_logs" / "training_status.json").read_text())
    assert status["step_size"] == {"lesson_num": 1}

    resumed_env = SimpleEnvironment("1D", seed=7)
    resumed = Runner(
        settings(3500), resumed_env, seed=1337, results_dir=tmp_path, run_id="run", resume=True, stats_writers=[]
    )
    await resumed.run()
    assert resumed.environment_parameters.lessons["step_size"] == 1
    assert resumed_env.parameters_received[0]["step_size"] == 0.2  # the resumed run starts in lesson 1


async def test_a_criterion_naming_an_untrained_behavior_is_refused() -> None:
    parameters = {"wall": {"curriculum": [{"value": 1.0, "completion_criteria": {"behavior": "Nope"}}, {"value": 2.0}]}}
    with pytest.raises(UsageError, match="'Nope', which this run does not train"):
        await Runner(settings(100, parameters), SimpleEnvironment("1D"), stats_writers=[]).run()


async def test_lessons_are_refused_with_an_executor_that_cannot_deliver_them() -> None:
    from asynctrainer.errors import UnsupportedFeatureError

    class ElsewhereExecutor:  # envs run elsewhere (as Ray's workers): lessons would not reach them
        async def run(self, job: Any, *, task_status: Any) -> None:  # pragma: no cover - never reached
            raise AssertionError("the run must be refused before its envs run")

    with pytest.raises(UnsupportedFeatureError, match=r"with env_settings\.executor ElsewhereExecutor"):
        await Runner(settings(100), SimpleEnvironment("1D"), executor=ElsewhereExecutor(), stats_writers=[]).run()


@pytest.mark.parametrize("require_reset", [True, False])
async def test_a_lesson_with_require_reset_resets_every_env_into_the_new_lesson(require_reset: bool) -> None:
    from asynctrainer.runtime.runner import Runner as BareRunner
    from asynctrainer.testing.fakes import CountingEnv, fake_trainer_factory

    class ResetCountingEnv(CountingEnv):
        """Records the environment parameters in force at each reset."""

        def __init__(self) -> None:
            super().__init__("Counter", episode_length=5)
            self.parameters: dict[str, Any] = {}
            self.resets: list[dict[str, Any]] = []

        def set_environment_parameters(self, values: Any) -> None:
            self.parameters = dict(values)

        async def reset(self) -> Any:
            self.resets.append(dict(self.parameters))
            return await super().reset()

    criteria = {"behavior": "Counter", "measure": "progress", "threshold": 0.2, "require_reset": require_reset}
    parameters = {"wall": {"curriculum": [{"value": 1.0, "completion_criteria": criteria}, {"value": 2.0}]}}
    envs = [ResetCountingEnv(), ResetCountingEnv()]
    run = dummy_ppo_settings("Counter", max_steps=200, run={"environment_parameters": parameters})
    runner = BareRunner(run, envs, trainer_factory=fake_trainer_factory(), stats_writers=[])
    await runner.run()
    assert runner.environment_parameters.lessons == {"wall": 1}
    for env in envs:
        assert env.parameters == {"wall": 2.0}
        if require_reset:  # the start, then at once into the new lesson
            assert env.resets == [{"wall": 1.0}, {"wall": 2.0}]
        else:  # the new value reaches the env without a reset (at its next episode, where it reads it)
            assert env.resets == [{"wall": 1.0}]
