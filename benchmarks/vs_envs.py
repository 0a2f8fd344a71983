"""The envs of ``vs_mlagents.py``, the same objects for both trainers, and the one measure of when a run solved.

Both trainers get an :class:`~asynctrainer.envs.base.AsyncEnv` built here: asynctrainer through
``asynctrainer-learn --env vs_envs:make_env``, ML-Agents through ``mlagents_worker.py``'s
adapter to its ``BaseEnv``. Each is wrapped in :class:`ReturnWatch`, which sees every step
batch and writes, as JSON lines to ``$VS_REPORT``, when the env was first reset, when the rolling mean of the last
``window`` episode returns first reached the case's target (wall seconds since
``$VS_SPAWN``, the parent's clock just before it started the process, and agent steps) and,
when the env closes, the steps of the whole run and the mean of its last episodes. Only numpy and asynctrainer's
env modules are imported, so ML-Agents' venv (numpy 1.23, protobuf 3) loads this too.

Cases (``$VS_CASE``; ``$VS_SEED`` seeds the env):

- ``cartpole``: gymnasium CartPole-v1, 8 copies, target 475 over 100 episodes;
- ``simple_discrete`` / ``simple_continuous``: ML-Agents' SimpleEnvironment, 1-D, one agent,
  target 0.9 over 20 episodes (a random policy's episodes often hit the goal, so 5 would be
  luck); the final mean is over the last 5, ML-Agents' own bar for it (≥ 0.9).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, StepBatch


@dataclass(frozen=True)
class Case:
    behavior: str
    target: float
    #: episodes of the rolling mean that decides when the run solved
    window: int
    #: episodes of the final mean (ML-Agents' bar for SimpleEnvironment: the last 5)
    final: int


CASES: dict[str, Case] = {
    "cartpole": Case("CartPole", 475.0, 100, 100),
    "simple_discrete": Case("1D", 0.9, 20, 5),
    "simple_continuous": Case("1D", 0.9, 20, 5),
}


def build(case: str, seed: int) -> Any:
    """The case's env, unwrapped."""
    if case == "cartpole":
        from asynctrainer.envs.gymnasium_env import GymnasiumEnv

        return GymnasiumEnv("CartPole-v1", 8, seed=seed)
    from asynctrainer.testing.simple_env import SimpleEnvironment

    sizes = (0, 1) if case == "simple_discrete" else (1, 0)
    return SimpleEnvironment("1D", action_sizes=sizes, seed=seed)


class ReturnWatch:
    """An AsyncEnv that passes everything through to ``env`` and keeps score of its episodes."""

    def __init__(self, env: Any, case: Case, report: str | None, spawn: float) -> None:
        self.env, self.case, self.spawn = env, case, spawn
        self._report = report
        self._running: dict[int, float] = {}
        self.returns: deque[float] = deque(maxlen=case.window)
        self.episodes = 0
        self.steps = 0
        self.solved = False

    def __getattr__(self, name: str) -> Any:  # set_environment_parameters and the like
        return getattr(self.env, name)

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        specs: Mapping[str, BehaviorSpec] = self.env.behavior_specs
        return specs

    def _write(self, **row: Any) -> None:
        if self._report:
            with open(self._report, "a", encoding="utf-8") as f:
                f.write(json.dumps({"wall_s": time.time() - self.spawn, **row}) + "\n")

    def see(self, batches: Mapping[str, StepBatch]) -> None:
        batch = batches[self.case.behavior]
        running = self._running
        for agent, reward in zip(batch.terminal.agent_id.tolist(), batch.terminal.reward.tolist(), strict=True):
            self.returns.append(running.pop(agent, 0.0) + reward)
            self.episodes += 1
        for agent, reward in zip(batch.decision.agent_id.tolist(), batch.decision.reward.tolist(), strict=True):
            running[agent] = running.get(agent, 0.0) + reward
        self.steps += len(batch.decision.agent_id)
        full = len(self.returns) == self.case.window
        if not self.solved and full and float(np.mean(self.returns)) >= self.case.target:
            self.solved = True
            self._write(event="solved", steps=self.steps, episodes=self.episodes)

    async def reset(self) -> dict[str, StepBatch]:
        if not self.steps:
            self._write(event="started")  # the trainer is set up: everything before is start-up
        out: dict[str, StepBatch] = await self.env.reset()
        self._running.clear()  # a reset starts every episode anew
        self.see(out)
        return out

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        out: dict[str, StepBatch] = await self.env.step(actions)
        self.see(out)
        return out

    async def aclose(self) -> None:
        last = list(self.returns)[-self.case.final :]
        mean = float(np.mean(last)) if last else None
        self._write(event="closed", steps=self.steps, episodes=self.episodes, final_mean=mean)
        await self.env.aclose()


def make_env() -> ReturnWatch:
    """``--env vs_envs:make_env``: the case named by ``$VS_CASE``, watched."""
    case = os.environ["VS_CASE"]
    env = build(case, int(os.environ.get("VS_SEED", "0")))
    return ReturnWatch(env, CASES[case], os.environ.get("VS_REPORT"), float(os.environ.get("VS_SPAWN", time.time())))
