from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import numpy as np
import pytest

from asynctrainer.envs.gymnasium_env import GymnasiumEnv, behavior_name_for, load_env
from asynctrainer.envs.spec import ActionBatch
from asynctrainer.envs.stepping import StepPlacement
from asynctrainer.errors import EnvError, SpecError
from asynctrainer.runtime.agent_processor import AgentProcessor
from asynctrainer.testing.fakes import random_snapshot


def test_behavior_names_drop_the_version() -> None:
    assert behavior_name_for("CartPole-v1") == "CartPole"
    assert behavior_name_for("ALE/Pong-v5") == "Pong"
    assert behavior_name_for("my.pkg:make_env") == "make_env"


def test_unknown_env_id_is_a_clear_error() -> None:
    with pytest.raises(EnvError, match="CartPole-v1"):
        GymnasiumEnv("CartPole-v9")


def test_an_unknown_vectorize_mode_is_a_clear_error() -> None:
    with pytest.raises(EnvError, match="vectorize is 'bogus'; allowed: auto, copies"):
        GymnasiumEnv("CartPole-v1", 2, vectorize="bogus")


def test_an_own_vector_env_that_refuses_the_kwargs_falls_back_to_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    import gymnasium

    def refuses(*args: object, **kwargs: object) -> None:
        raise TypeError("unexpected keyword argument")

    monkeypatch.setattr(gymnasium, "make_vec", refuses)
    env = GymnasiumEnv("CartPole-v1", 2, seed=0)
    assert not env.next_step_autoreset  # copies in a SyncVectorEnv, SAME_STEP
    assert type(env._vec).__name__ == "SyncVectorEnv"


@pytest.mark.parametrize(
    ("env_id", "continuous", "branches"),
    [("CartPole-v1", 0, (2,)), ("Pendulum-v1", 1, ()), ("MountainCarContinuous-v0", 1, ())],
)
def test_spaces_map_to_action_specs(env_id: str, continuous: int, branches: tuple[int, ...]) -> None:
    env = GymnasiumEnv(env_id, 2, seed=0)
    spec = env.behavior_specs[env.behavior_name]
    assert spec.action_spec.continuous_size == continuous
    assert spec.action_spec.discrete_branches == branches


@pytest.mark.parametrize("vectorize", ["auto", "copies"])
async def test_truncation_is_interrupted_and_no_transition_crosses_an_episode(vectorize: str) -> None:
    """The same invariants with CartPole's own vectorised env (NEXT_STEP autoreset) and with
    copies in a SyncVectorEnv (SAME_STEP)."""
    env = GymnasiumEnv("CartPole-v1", 3, seed=0, env_kwargs={"max_episode_steps": 7}, vectorize=vectorize)
    assert env.next_step_autoreset is (vectorize == "auto")
    spec = env.behavior_specs["CartPole"]
    snap = random_snapshot("CartPole", spec)
    proc = AgentProcessor("CartPole", spec, time_horizon=1000)
    rng = np.random.default_rng(0)
    steps = await env.reset()
    trajs = []
    for _ in range(40):
        b = steps["CartPole"]
        trajs += proc.add_steps(b.decision, b.terminal)
        if not len(b.decision):  # every copy ended: none asks for an action (the env loop sends none)
            steps = await env.step({})
            continue
        out = snap.act(b.decision.obs, rng=rng)
        proc.record_actions(b.decision, out, 0)
        steps = await env.step({"CartPole": ActionBatch(out.continuous, out.discrete, b.decision.agent_id)})
    await env.aclose()
    assert len(trajs) >= 6
    for t in trajs:
        assert t.done_reached
        assert len(t) <= 7
        if len(t) == 7:
            assert t.interrupted and not t.terminated
        else:
            assert t.terminated
        assert np.all(t.rewards == 1.0)  # CartPole pays 1 a step: no reset step's 0 is learned from
        # CartPole's dynamics: consecutive observations within a trajectory are close; a reset
        # would jump. The trajectory's next_obs continues its last step.
        seq = np.vstack([t.obs, t.next_obs[None]])
        assert np.abs(np.diff(seq[:, 0])).max() < 0.2
        assert np.abs(t.obs[0]).max() <= 0.05  # each episode starts from a reset state


async def test_next_step_autoreset_an_ended_copy_asks_again_after_one_step() -> None:
    env = GymnasiumEnv("CartPole-v1", 2, seed=0, env_kwargs={"max_episode_steps": 3})
    steps = await env.reset()
    zero = np.zeros((2, 0), np.float32)
    for _ in range(2):
        steps = await env.step({"CartPole": ActionBatch(zero, np.zeros((2, 1), np.int32), np.arange(2))})
    steps = await env.step({"CartPole": ActionBatch(zero, np.zeros((2, 1), np.int32), np.arange(2))})
    batch = steps["CartPole"]  # step 3: both truncated, neither asks for a decision
    assert batch.terminal.agent_id.tolist() == [0, 1] and batch.terminal.interrupted.all()
    assert len(batch.decision) == 0
    with pytest.raises(SpecError, match="asked for a decision"):  # an action for a copy that did not ask
        await env.step({"CartPole": ActionBatch(zero[:1], np.zeros((1, 1), np.int32), np.arange(1))})
    steps = await env.step({})  # no copy asked: the env loop sends no actions
    batch = steps["CartPole"]  # the reset step: both ask again, with no reward
    assert batch.decision.agent_id.tolist() == [0, 1] and not batch.decision.reward.any()
    assert len(batch.terminal) == 0
    await env.aclose()


async def test_environment_parameters_make_a_vectorised_env_copies_before_it_starts() -> None:
    env = GymnasiumEnv("CartPole-v1", 2, seed=0)
    assert env.next_step_autoreset
    env.set_environment_parameters({"low": -0.01})
    assert not env.next_step_autoreset  # each copy's reset gets the options now
    await env.reset()
    await env.aclose()
    started = GymnasiumEnv("CartPole-v1", 2, seed=0)
    await started.reset()
    with pytest.raises(EnvError, match="before the env starts"):
        started.set_environment_parameters({"low": -0.01})
    await started.aclose()


async def test_fast_steps_move_to_the_loop_and_a_slow_one_sends_them_back() -> None:
    loop_thread = threading.get_ident()
    where: list[bool] = []
    delay = [0.0]

    def step() -> None:
        where.append(threading.get_ident() == loop_thread)
        end = time.perf_counter() + delay[0]
        while time.perf_counter() < end:  # CPU time, which the placement measures (a sleep is not)
            pass

    placement = StepPlacement(inline_below=0.01, window=4, slow_step=0.015)
    for _ in range(6):
        await placement.step(step)
    assert where == [False] * 4 + [True] * 2  # four fast steps in the thread, then on the loop
    delay[0] = 0.02
    await placement.step(step)  # one step over slow_step on the loop: back to the thread
    assert not placement.on_loop and placement.fallbacks == 1
    delay[0] = 0.0
    for _ in range(8):
        await placement.step(step)
    assert where[7:] == [False] * 8 and placement.on_loop  # twice the window before the loop again
    never = StepPlacement(inline_below=None, window=1)
    where.clear()
    for _ in range(3):
        await never.step(step)
    assert where == [False] * 3


async def test_a_step_on_the_loop_lets_other_tasks_run() -> None:
    placement = StepPlacement(inline_below=1.0, window=1)
    await placement.step(lambda: None)
    assert placement.on_loop
    ran = []

    async def other() -> None:
        ran.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        await placement.step(lambda: None)
        assert ran  # the step's checkpoint ran the other task


def test_load_env_accepts_a_factory_path() -> None:
    env = load_env("gymnasium.envs.classic_control.cartpole:CartPoleEnv", num_envs=2)
    assert list(env.behavior_specs) == ["CartPoleEnv"]
    with pytest.raises(EnvError, match="no_such_module"):
        load_env("no_such_module:make")


FACTORIES = """
import gymnasium

calls = []


def counted():
    calls.append(1)
    return gymnasium.make("CartPole-v1")


def broken():
    raise RuntimeError("no licence server")


def broken_later():
    calls.append(1)
    if len(calls) > 1:
        raise OSError("out of ports")
    return gymnasium.make("CartPole-v1")
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    (tmp_path / "user_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("user_factories")
    yield module
    sys.modules.pop("user_factories", None)


def test_a_factory_is_called_once_per_env_copy(factories: ModuleType) -> None:
    env = load_env("user_factories:counted", num_envs=3)
    assert len(factories.calls) == 3
    assert env.num_envs == 3


@pytest.mark.parametrize("name", ["broken", "broken_later"])
def test_a_factory_that_raises_is_an_env_error_naming_it(factories: ModuleType, name: str) -> None:
    with pytest.raises(EnvError, match=f"user_factories:{name}") as info:
        load_env(f"user_factories:{name}", num_envs=2)
    assert isinstance(info.value.__cause__, (RuntimeError, OSError))
    assert "no licence server" in str(info.value) or "out of ports" in str(info.value)


def test_a_gymnasium_env_given_a_raising_factory_is_an_env_error_naming_it() -> None:
    def no_env() -> object:
        raise ValueError("bad map")

    with pytest.raises(EnvError, match=r"no_env.*ValueError: bad map"):
        GymnasiumEnv(no_env, 2)


class ImageEnv:
    """A gymnasium env whose observation is an 8x6 RGB uint8 image (every pixel the step count)."""

    def __init__(self) -> None:
        import gymnasium

        self.observation_space = gymnasium.spaces.Box(0, 255, (8, 6, 3), np.uint8)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.metadata: dict[str, object] = {}
        self.render_mode = None
        self.spec = None
        self.t = 0

    def reset(self, *, seed: int | None = None, options: object = None) -> tuple[np.ndarray, dict[str, object]]:
        self.t = 0
        return np.zeros((8, 6, 3), np.uint8), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, object]]:
        self.t += 51
        return np.full((8, 6, 3), self.t, np.uint8), 1.0, self.t >= 255, False, {}

    def close(self) -> None:
        pass


async def test_an_image_box_is_a_visual_observation_in_zero_to_one() -> None:
    env = GymnasiumEnv(ImageEnv, num_envs=2)
    spec = env.behavior_specs["ImageEnv"].observation_specs[0]
    assert spec.shape == (8, 6, 3) and spec.is_visual
    await env.reset()
    out = await env.step(
        {"ImageEnv": ActionBatch(np.zeros((2, 0), np.float32), np.zeros((2, 1), np.int32), np.arange(2))}
    )
    np.testing.assert_allclose(out["ImageEnv"].decision.obs[0], 0.2, atol=1e-6)  # 51 / 255
    await env.aclose()
