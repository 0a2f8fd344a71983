"""Expert demonstrations of :class:`SimpleEnvironment`, recorded as ML-Agents' tests record theirs.

The expert plays optimally: each continuous action is the goal (the env clamps it to one step)
and each discrete branch moves towards the goal. ML-Agents' GAIL and behavioral-cloning tests
learn from such a recording.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asynctrainer.demos.writer import DemonstrationWriter
from asynctrainer.envs.spec import ActionBatch
from asynctrainer.testing.simple_env import SimpleEnvironment

__all__ = ["expert_actions", "record_simple_expert"]


def expert_actions(env: SimpleEnvironment, behavior: str) -> ActionBatch:
    """The optimal action of every agent of ``behavior``: move each position towards the goal."""
    goal = env.goals[behavior][:, None]
    a = env.action_spec
    continuous = np.repeat(goal, a.continuous_size, axis=1).astype(np.float32)
    discrete = np.repeat((goal > 0).astype(np.int32), a.discrete_size, axis=1)
    return ActionBatch(continuous, discrete, np.arange(env.num_agents, dtype=np.int64))


async def record_simple_expert(env: SimpleEnvironment, path: str | Path, *, steps: int = 100) -> Path:
    """Play ``steps`` env steps with the expert on the env's first behavior, recording every decision and terminal."""
    behavior = next(iter(env.behavior_specs))
    with DemonstrationWriter(path, env.behavior_specs[behavior], behavior) as writer:
        batch = (await env.reset())[behavior]
        for _ in range(steps):
            actions = expert_actions(env, behavior)
            decision = batch.decision
            for i, agent in enumerate(decision.agent_id):
                writer.add(
                    int(agent),
                    [o[i] for o in decision.obs],
                    reward=float(decision.reward[i]),
                    continuous=actions.continuous[i],
                    discrete=actions.discrete[i],
                )
            batch = (await env.step({behavior: actions}))[behavior]
            terminal = batch.terminal
            for i, agent in enumerate(terminal.agent_id):
                writer.add(
                    int(agent),
                    [o[i] for o in terminal.obs],
                    reward=float(terminal.reward[i]),
                    done=True,
                    interrupted=bool(terminal.interrupted[i]),
                )
    return writer.path
