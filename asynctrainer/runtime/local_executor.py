"""The Runner's default env executor: one env loop on the caller's event loop."""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from asynctrainer.runtime.contracts import EnvJob
from asynctrainer.runtime.env_loop import run_env_loop

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Steps the env in this process, on the Runner's loop (``env_settings.executor: local``)."""

    async def run(self, job: EnvJob, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await run_env_loop(
            job.env, job.links, rng=job.rng, stats=job.stats, reporters=job.reporters, task_status=task_status
        )
