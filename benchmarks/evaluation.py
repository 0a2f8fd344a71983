"""Deterministic evaluation shared by the benchmark scripts."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any


def evaluate(
    env_id: str | Callable[[], Any],
    act: Callable[[Any], Any],
    seed_base: int,
    episodes: int,
    start: Callable[[], None] | None = None,
) -> float:
    """Mean return of ``act`` over ``episodes`` episodes of ``env_id`` (an id, or a function making
    the env), seeded ``seed_base + i``; ``start`` is called before each episode (a recurrent
    policy forgets its memory there)."""
    import gymnasium as gym

    env = gym.make(env_id) if isinstance(env_id, str) else env_id()
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed_base + i)
        if start is not None:
            start()
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return statistics.mean(returns)
