"""The Runner's default env executor: one env loop on the caller's event loop."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import numpy as np
from anyio.abc import TaskStatus

from asynctrainer.envs.base import AsyncEnv
from asynctrainer.runtime.contracts import ExecutorContext
from asynctrainer.runtime.env_loop import BehaviorLink, run_env_loop

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Steps the env in this process, on the Runner's loop (``env_settings.executor: local``)."""

    async def run(
        self,
        env: AsyncEnv,
        links: Mapping[str, BehaviorLink],
        rng: np.random.Generator,
        context: ExecutorContext,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        await run_env_loop(env, links, rng=rng, stats=context.stats, task_status=task_status)
