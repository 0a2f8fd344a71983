"""CartPole-v1 without its velocity components: a partially observed task for a policy with memory.

The agent sees the cart's position and the pole's angle only (SB3-contrib's ``CartPoleNoVel``
task); the velocities must be inferred from how they change, so a feed-forward policy cannot
balance the pole for long and a recurrent one can.

    PYTHONPATH=examples asynctrainer-learn examples/cartpole_memory_ppo.yaml \\
        --env cartpole_no_velocity:make_env --run-id cartpole-memory
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

#: Indices of CartPole's observation kept: cart position and pole angle.
VISIBLE = (0, 2)


class NoVelocity(gymnasium.ObservationWrapper):  # type: ignore[type-arg]
    def __init__(self, env: gymnasium.Env) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        box = env.observation_space
        assert isinstance(box, gymnasium.spaces.Box)
        self.observation_space = gymnasium.spaces.Box(box.low[list(VISIBLE)], box.high[list(VISIBLE)], dtype=np.float32)

    def observation(self, observation: Any) -> Any:
        return np.asarray(observation, np.float32)[list(VISIBLE)]


def make_env() -> gymnasium.Env:  # type: ignore[type-arg]
    return NoVelocity(gymnasium.make("CartPole-v1"))
