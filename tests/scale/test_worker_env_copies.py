"""A Ray worker builds its env copies with one factory call per copy, as the local path does."""

from __future__ import annotations

from typing import Any

import gymnasium
import pytest

from asynctrainer.envs.gymnasium_env import GymnasiumEnv
from asynctrainer.errors import EnvError
from asynctrainer.scale.worker import build_env_copies


class CountedCartPole:
    """A picklable factory that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return gymnasium.make("CartPole-v1")


async def test_a_gymnasium_factory_is_called_once_per_copy() -> None:
    factory = CountedCartPole()
    copies = await build_env_copies(factory, 3, seed=1)
    assert len(copies) == 1 and isinstance(copies[0], GymnasiumEnv) and copies[0].num_envs == 3
    assert factory.calls == 3
    await copies[0].aclose()


async def test_a_factory_failing_at_a_later_copy_is_an_env_error_naming_it() -> None:
    made: list[Any] = []

    def flaky() -> Any:
        if made:
            raise OSError("out of ports")
        made.append(gymnasium.make("CartPole-v1"))
        return made[0]

    with pytest.raises(EnvError, match=r"flaky.*out of ports"):
        await build_env_copies(flaky, 2, seed=1)
