from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from asynctrainer.envs.gymnasium_env import GymnasiumEnv, behavior_name_for, load_env
from asynctrainer.envs.spec import ActionBatch
from asynctrainer.errors import EnvError
from asynctrainer.runtime.agent_processor import AgentProcessor
from asynctrainer.testing.fakes import random_snapshot


def test_behavior_names_drop_the_version() -> None:
    assert behavior_name_for("CartPole-v1") == "CartPole"
    assert behavior_name_for("ALE/Pong-v5") == "Pong"
    assert behavior_name_for("my.pkg:make_env") == "make_env"


def test_unknown_env_id_is_a_clear_error() -> None:
    with pytest.raises(EnvError, match="CartPole-v1"):
        GymnasiumEnv("CartPole-v9")


@pytest.mark.parametrize(
    ("env_id", "continuous", "branches"),
    [("CartPole-v1", 0, (2,)), ("Pendulum-v1", 1, ()), ("MountainCarContinuous-v0", 1, ())],
)
def test_spaces_map_to_action_specs(env_id: str, continuous: int, branches: tuple[int, ...]) -> None:
    env = GymnasiumEnv(env_id, 2, seed=0)
    spec = env.behavior_specs[env.behavior_name]
    assert spec.action_spec.continuous_size == continuous
    assert spec.action_spec.discrete_branches == branches


async def test_truncation_is_interrupted_and_no_transition_crosses_an_episode() -> None:
    import gymnasium

    env = GymnasiumEnv(lambda: gymnasium.make("CartPole-v1", max_episode_steps=7), 3, seed=0, behavior_name="C")
    spec = env.behavior_specs["C"]
    snap = random_snapshot("C", spec)
    proc = AgentProcessor("C", spec, time_horizon=1000)
    rng = np.random.default_rng(0)
    steps = await env.reset()
    trajs = []
    for _ in range(40):
        b = steps["C"]
        trajs += proc.add_steps(b.decision, b.terminal)
        out = snap.act(b.decision.obs, rng=rng)
        proc.record_actions(b.decision, out, 0)
        steps = await env.step({"C": ActionBatch(out.continuous, out.discrete, b.decision.agent_id)})
    await env.aclose()
    assert trajs
    for t in trajs:
        assert t.done_reached
        assert len(t) <= 7
        if len(t) == 7:
            assert t.interrupted and not t.terminated
        else:
            assert t.terminated
        # CartPole's dynamics: consecutive observations within a trajectory are close; a reset
        # would jump. The trajectory's next_obs continues its last step.
        seq = np.vstack([t.obs, t.next_obs[None]])
        assert np.abs(np.diff(seq[:, 0])).max() < 0.2


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
