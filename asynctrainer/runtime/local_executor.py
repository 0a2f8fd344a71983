"""The Runner's default env executor: one env loop per env, on the caller's event loop."""

from __future__ import annotations

import anyio
import numpy as np
from anyio.abc import TaskStatus

from asynctrainer.envs.base import AsyncEnv
from asynctrainer.runtime.contracts import EnvJob
from asynctrainer.runtime.env_loop import run_env_loop

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Steps the envs in this process, on the Runner's loop (``env_settings.executor: local``).

    Each env gets its own loop (worker id = its index, so agent ids stay apart) sharing the
    behaviors' links: one channel and one snapshot per behavior, whichever env the experience
    came from. Ready once every env has reset; returns when every env stopped on its side.
    """

    async def run(self, job: EnvJob, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if len(job.envs) == 1:
            await run_env_loop(
                job.env, job.links, rng=job.rng, stats=job.stats, reporters=job.reporters, task_status=task_status
            )
            return
        rngs = job.rng.spawn(len(job.envs))
        async with anyio.create_task_group() as tg:
            for worker_id, (env, rng) in enumerate(zip(job.envs, rngs, strict=True)):
                await tg.start(self._loop, job, env, rng, worker_id)
            task_status.started()

    @staticmethod
    async def _loop(
        job: EnvJob, env: AsyncEnv, rng: np.random.Generator, worker_id: int, *, task_status: TaskStatus[None]
    ) -> None:
        await run_env_loop(
            env,
            job.links,
            rng=rng,
            worker_id=worker_id,
            stats=job.stats,
            reporters=job.reporters,
            task_status=task_status,
        )
