"""The env loop on its own: what it sends, when it waits, how it ends. Fakes only, no TensorFlow."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from asynctrainer.envs.spec import ActionBatch, DecisionSteps, StepBatch
from asynctrainer.errors import SpecError
from asynctrainer.runtime.channels import open_trajectory_channel
from asynctrainer.runtime.env_loop import BehaviorLink, EnvLoopStats, allowed_mask, run_env_loop
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.testing.fakes import CountingEnv, random_snapshot


def _link(
    env: CountingEnv, *, capacity: int = 64, **options: object
) -> tuple[BehaviorLink, MemoryObjectReceiveStream[Trajectory]]:
    spec = env.behavior_specs[env.name]
    slot = PolicySlot(env.name)
    slot.publish(random_snapshot(env.name, spec))
    send, receive = open_trajectory_channel(capacity)
    link = BehaviorLink(name=env.name, spec=spec, slot=slot, send=send, time_horizon=8, **options)  # type: ignore[arg-type]
    return link, receive  # type: ignore[return-value]


async def _loop(
    env: CountingEnv,
    link: BehaviorLink,
    stats: EnvLoopStats,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await run_env_loop(env, {env.name: link}, rng=np.random.default_rng(0), stats=stats, task_status=task_status)


async def _publish_and_see_it_step(env: CountingEnv, link: BehaviorLink) -> None:
    """Publish policy version 1 and wait until the waiting env loop steps again."""
    waited_at = env.steps
    link.slot.publish(random_snapshot(env.name, link.spec, version=1, seed=1))
    while env.steps == waited_at:
        await anyio.lowlevel.checkpoint()


async def test_each_finished_episode_arrives_once_as_a_trajectory_with_its_return() -> None:
    env = CountingEnv(num_agents=3, episode_length=5)
    link, receive = _link(env)
    stats = EnvLoopStats()
    got: list[Trajectory] = []
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: run_env_loop(
                env, {env.name: link}, rng=np.random.default_rng(0), stats=stats, task_status=task_status
            )
        )
        while len(got) < 6:
            got.append(await receive.receive())
        tg.cancel_scope.cancel()
    link.send.close()
    receive.close()
    assert all(len(t) == 5 and t.terminated and t.episode_return == 5.0 for t in got)  # 1 a step
    assert sorted({t.agent_id for t in got}) == sorted({got[0].agent_id, got[1].agent_id, got[2].agent_id})
    assert stats.trajectories >= 6
    assert stats.decisions >= 3 * stats.env_steps  # every agent decides at every step
    assert env.closed  # closed on the way out, even when cancelled


async def test_an_undeclared_behavior_is_a_spec_error_and_the_env_is_closed() -> None:
    class Liar(CountingEnv):
        async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
            steps = await super().step(actions)
            return {"Someone": steps[self.name]}

    env = Liar()
    link, receive = _link(env)
    with receive, pytest.raises(SpecError, match="Someone"):
        try:
            await run_env_loop(env, {env.name: link}, rng=np.random.default_rng(0))
        finally:
            link.send.close()
    assert env.closed


async def test_a_full_block_channel_stops_the_loop_without_losing_trajectories() -> None:
    env = CountingEnv(num_agents=1, episode_length=1)
    link, receive = _link(env, capacity=2)
    stats = EnvLoopStats()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_loop, env, link, stats)
        for _ in range(50):  # let it run until the channel is full and the loop waits
            await anyio.lowlevel.checkpoint()
        steps_when_full = env.steps
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert env.steps == steps_when_full  # backpressure: no stepping while nobody reads
        assert link.send.statistics().buffered == 2
        first = await receive.receive()
        tg.cancel_scope.cancel()
    link.send.close()
    receive.close()
    assert len(first) == 1
    assert link.send.statistics().dropped == 0


async def test_strict_on_policy_waits_for_a_new_snapshot_once_the_buffer_is_full() -> None:
    env = CountingEnv(num_agents=2, episode_length=4)
    link, receive = _link(env, strict_on_policy=True, update_threshold=16)
    stats = EnvLoopStats()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_loop, env, link, stats)
        received = 0
        while received < 16:
            received += len(await receive.receive())
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert stats.lag_waits == 1
        waited_at = env.steps
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert env.steps == waited_at  # waiting for the update
        await _publish_and_see_it_step(env, link)
        tg.cancel_scope.cancel()
    link.send.close()
    receive.close()


async def test_an_off_policy_trainer_is_not_held_back_before_its_first_policy() -> None:
    env = CountingEnv(num_agents=2, episode_length=4)
    link, receive = _link(env, capacity=8, lag_bound=16, warmup_steps=None)
    stats = EnvLoopStats()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_loop, env, link, stats)
        for _ in range(200):
            await anyio.lowlevel.checkpoint()
        assert stats.lag_waits == 0
        assert link.send.statistics().buffered == 8  # only the channel's capacity stopped it
        tg.cancel_scope.cancel()
    link.send.close()
    receive.close()


@pytest.mark.parametrize("warmup", [0, 24])
async def test_before_the_first_new_policy_acting_runs_ahead_by_the_lag_bound_and_the_warmup(warmup: int) -> None:
    # Without this bound, a fast env filled the channel with the initial policy's experience
    # while the first update ran, and PPO learned SimpleEnvironment 6x slower (benchmarks/vs_mlagents.py).
    env = CountingEnv(num_agents=2, episode_length=4)
    link, receive = _link(env, lag_bound=16, warmup_steps=warmup)
    stats = EnvLoopStats()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_loop, env, link, stats)
        for _ in range(200):  # the channel (64) would take far more than the bound
            await anyio.lowlevel.checkpoint()
        assert stats.lag_waits == 1
        sent = link.send.statistics().buffered * 4  # episodes of 4 steps, one trajectory each
        assert 16 + warmup <= sent < 16 + warmup + 2 * 4  # stops at the first send past the bound
        await _publish_and_see_it_step(env, link)
        tg.cancel_scope.cancel()
    link.send.close()
    receive.close()


def test_allowed_mask_inverts_ml_agents_forbidden_flags() -> None:
    decision = DecisionSteps(
        [np.zeros((2, 1), np.float32)],
        np.zeros(2, np.float32),
        np.arange(2, dtype=np.int64),
        action_mask=np.array([[True, False], [False, False]]),
    )
    mask = allowed_mask(decision)
    assert mask is not None
    np.testing.assert_array_equal(mask, [[0.0, 1.0], [1.0, 1.0]])
