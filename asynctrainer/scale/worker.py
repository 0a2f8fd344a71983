"""The env worker a Ray actor runs: env copies, one AgentProcessor per behavior and copy, numpy acting.

:class:`EnvWorker` is a plain class (``ray.remote(EnvWorker)`` makes the actor), so it is
tested without Ray. Its methods are coroutines: Ray runs it as an *async actor*, whose calls
share one event loop, so a ``set_policy`` call lands between two steps of a running
``sample``.

The worker steps only while a ``sample`` call asks it to (calls are served one after the
other), so the driver's number of calls in flight bounds how far it can run ahead. Every
step mirrors ``run_env_loop``: cut trajectories, act with the newest snapshot held, record,
step the env. What leaves the worker is a dict of plain data (``asynctrainer.scale.codec``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from asynctrainer.envs.base import AsyncEnv
from asynctrainer.envs.spec import ActionBatch, StepBatch
from asynctrainer.errors import AsyncTrainerError, EnvError, SpecError
from asynctrainer.runtime.agent_processor import AgentProcessor
from asynctrainer.runtime.env_loop import act_for
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.scale.codec import snapshot_from_payload, trajectory_to_dict

__all__ = ["BehaviorConfig", "EnvWorker", "WorkerEnvSource", "build_env_copies"]

#: A gymnasium id or ``package.module:factory`` string, or a picklable callable returning an
#: AsyncEnv (sync or async) or a gymnasium env. A factory with a ``for_worker(number)`` method
#: (a Unity player's) gives each env copy its own factory (its own port and player).
WorkerEnvSource = str | Callable[[], Any]


@dataclass(frozen=True)
class BehaviorConfig:
    """What a worker needs to know of one behavior (sent as a plain dict, see :meth:`to_dict`)."""

    time_horizon: int
    deterministic: bool = False
    training: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"time_horizon": self.time_horizon, "deterministic": self.deterministic, "training": self.training}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BehaviorConfig:
        return cls(int(data["time_horizon"]), bool(data["deterministic"]), bool(data["training"]))


async def build_env_copies(source: WorkerEnvSource, count: int, seed: int, first_number: int = 0) -> list[AsyncEnv]:
    """Build a worker's envs: ``count`` copies of ``source``.

    A gymnasium env (by id, or from a factory) becomes one :class:`GymnasiumEnv` stepping
    ``count`` copies together; a factory returning an :class:`AsyncEnv` is called ``count``
    times (each copy is stepped concurrently with the others). A factory with ``for_worker``
    makes copy ``i`` from ``source.for_worker(first_number + i)``.

    :raises EnvError: when the source cannot be built.
    """
    from asynctrainer.envs.gymnasium_env import GymnasiumEnv, gymnasium_copies, load_env

    if isinstance(source, str):
        first = load_env(source, num_envs=count, seed=seed)
        if isinstance(first, GymnasiumEnv):
            return [first]
        return [first, *(load_env(source, seed=seed) for _ in range(count - 1))]

    numbered = getattr(source, "for_worker", None)
    made_copies = 0

    async def call() -> Any:
        nonlocal made_copies
        factory = source if numbered is None else numbered(first_number + made_copies)
        made_copies += 1
        made = factory()
        return await made if isinstance(made, Awaitable) else made

    try:
        first = await call()
        if not isinstance(first, AsyncEnv):
            if not hasattr(first, "step") or not hasattr(first, "action_space"):
                raise EnvError(
                    f"The env factory returned {type(first).__name__}, neither an AsyncEnv nor a gymnasium env."
                )
            label = getattr(source, "__qualname__", None) or type(source).__name__
            return [gymnasium_copies(first, source, label, count, seed)]
        copies: list[AsyncEnv] = [first]
        for _ in range(count - 1):
            copies.append(await call())
        return copies
    except AsyncTrainerError:
        raise
    except Exception as exc:
        raise EnvError(f"Could not create the env in a worker: {type(exc).__name__}: {exc}") from exc


class _EnvCopy:
    """One env copy with its processors and RNG; one ``act`` + ``step`` is one env step."""

    def __init__(
        self, env: AsyncEnv, behaviors: Mapping[str, BehaviorConfig], worker_id: int, rng: np.random.Generator
    ) -> None:
        self.env = env
        self.behaviors = behaviors
        self.rng = rng
        self.processors = {
            name: AgentProcessor(name, env.behavior_specs[name], time_horizon=cfg.time_horizon, worker_id=worker_id)
            for name, cfg in behaviors.items()
            if name in env.behavior_specs
        }
        self.steps: dict[str, StepBatch] = {}

    async def reset(self) -> None:
        self.steps = await self.env.reset()

    def act(self, snapshots: Mapping[str, PolicySnapshot], out: list[Trajectory]) -> tuple[dict[str, ActionBatch], int]:
        """Cut what the last step finished (into ``out``) and choose the next actions."""
        actions: dict[str, ActionBatch] = {}
        decisions = 0
        for name, batch in self.steps.items():
            processor = self.processors.get(name)
            if processor is None:
                raise SpecError(
                    f"The env reported behavior '{name}', which it did not declare; known: {sorted(self.processors)}."
                )
            out.extend(processor.add_steps(batch.decision, batch.terminal))
            if len(batch.decision):
                cfg = self.behaviors[name]
                actions[name] = act_for(
                    batch.decision,
                    processor,
                    snapshots[name],
                    deterministic=cfg.deterministic,
                    training=cfg.training,
                    rng=self.rng,
                )
                decisions += len(batch.decision)
        return actions, decisions

    async def step(self, actions: dict[str, ActionBatch]) -> None:
        self.steps = await self.env.step(actions)

    @property
    def open_trajectories(self) -> int:
        """Agents with a trajectory in progress (lost if the worker dies now)."""
        return sum(len(p.agent_ids) for p in self.processors.values())


class EnvWorker:
    """Env copies stepped on request, acting with the newest policy received.

    :param env_source: see :data:`WorkerEnvSource`; built in the worker process.
    :param behaviors: ``{env behavior name: BehaviorConfig.to_dict()}``.
    :param worker_index: this worker's index; agent ids become ``agent_<index*copies+copy>-<id>``.
    :param envs_per_worker: env copies (a gymnasium env steps them as one vector env).
    :param seed: seeds the env copies and the action sampling.

    A restarted actor is a new instance (``incarnation`` changes): envs are rebuilt on its
    first call and the policy comes with every ``sample`` call.
    """

    def __init__(
        self,
        env_source: WorkerEnvSource,
        behaviors: Mapping[str, Mapping[str, Any]],
        *,
        worker_index: int = 0,
        envs_per_worker: int = 1,
        seed: int = 0,
    ) -> None:
        self.env_source = env_source
        self.behaviors = {name: BehaviorConfig.from_dict(cfg) for name, cfg in behaviors.items()}
        self.worker_index = worker_index
        self.envs_per_worker = envs_per_worker
        self.incarnation = uuid.uuid4().hex
        # A restarted worker must not replay the randomness of the one it replaces.
        self._seeds = np.random.SeedSequence([seed, worker_index, uuid.UUID(self.incarnation).int % 2**32])
        self._copies: list[_EnvCopy] | None = None
        self._snapshots: dict[str, PolicySnapshot] = {}
        self._lock = anyio.Lock()
        self._closed = False
        self.env_steps = 0
        self.decisions = 0

    # ----- policy ------------------------------------------------------------------------------

    def _install(self, message: Mapping[str, Any] | None) -> None:
        """Keep a policy message ``{"behavior": name, "snapshot": payload}`` if it is newer."""
        if message is None:
            return
        name = str(message["behavior"])
        held = self._snapshots.get(name)
        if held is not None and held.version >= int(message["snapshot"]["header"]["version"]):
            return
        spec = None
        if self._copies:
            spec = self._copies[0].env.behavior_specs.get(name)
        self._snapshots[name] = snapshot_from_payload(message["snapshot"], spec)

    async def set_policy(self, message: Mapping[str, Any]) -> int:
        """Take a newer policy; a running ``sample`` uses it from its next step. Returns the version held."""
        self._install(message)
        return self._snapshots[str(message["behavior"])].version

    # ----- stepping ----------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._closed:
            raise EnvError(f"Worker {self.worker_index} was closed.")
        if self._copies is not None:
            return
        seed = int(self._seeds.generate_state(1)[0] % 2**31)
        # Copy numbers from 1: number 0 is the driver's env (it gave the specs, e.g. player 0 on base_port).
        first_number = 1 + self.worker_index * self.envs_per_worker
        envs = await build_env_copies(self.env_source, self.envs_per_worker, seed, first_number)
        rngs = [np.random.default_rng(s) for s in self._seeds.spawn(len(envs))]
        copies = []
        for i, (env, rng) in enumerate(zip(envs, rngs, strict=True)):
            missing = sorted(set(self.behaviors) - set(env.behavior_specs))
            if missing:
                raise EnvError(
                    f"Worker {self.worker_index}: its env has behaviors {sorted(env.behavior_specs)}, "
                    f"not {missing} as the driver's env has."
                )
            copies.append(_EnvCopy(env, self.behaviors, self.worker_index * self.envs_per_worker + i, rng))
        for copy in copies:
            await copy.reset()
        self._copies = copies

    async def start(self, *policies: Mapping[str, Any]) -> dict[str, Any]:
        """Build and reset the envs (if not yet done) and report what this worker runs."""
        for message in policies:
            self._install(message)
        async with self._lock:
            await self._ensure_started()
        assert self._copies is not None
        specs = self._copies[0].env.behavior_specs
        return {
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "behaviors": sorted(specs),
            "copies": len(self._copies),
        }

    async def sample(self, min_experiences: int, max_env_steps: int, *policies: Mapping[str, Any]) -> dict[str, Any]:
        """Step until ``min_experiences`` experiences are in finished trajectories (or after
        ``max_env_steps`` steps), and return them.

        :param policies: policy messages (Ray resolves each top-level ObjectRef); the newest
            version of each behavior is kept.
        :returns: ``{"incarnation", "worker", "env_steps", "decisions", "open_trajectories",
            "trajectories": [trajectory_to_dict(...)]}``.
        """
        for message in policies:
            self._install(message)
        async with self._lock:
            if self._closed:  # a call still queued when the driver stopped
                return self._batch([], 0, 0)
            await self._ensure_started()
            assert self._copies is not None
            missing = sorted(set(self.behaviors) - set(self._snapshots))
            if missing:
                raise EnvError(f"Worker {self.worker_index} has no policy yet for {missing}.")
            out: list[Trajectory] = []
            experiences = env_steps = decisions = 0
            while experiences < min_experiences and env_steps < max_env_steps and not self._closed:
                before = len(out)
                planned = [copy.act(self._snapshots, out) for copy in self._copies]
                decisions += sum(n for _, n in planned)
                if len(self._copies) == 1:
                    await self._copies[0].step(planned[0][0])
                else:
                    async with anyio.create_task_group() as tg:
                        for copy, (actions, _) in zip(self._copies, planned, strict=True):
                            tg.start_soon(copy.step, actions)
                env_steps += len(self._copies)
                experiences += sum(len(t) for t in out[before:])
                # Let a set_policy call in between two steps (a pure-numpy env never yields).
                await anyio.sleep(0)
            self.env_steps += env_steps
            self.decisions += decisions
            return self._batch(out, env_steps, decisions)

    def _batch(self, out: list[Trajectory], env_steps: int, decisions: int) -> dict[str, Any]:
        return {
            "incarnation": self.incarnation,
            "worker": self.worker_index,
            "env_steps": env_steps,
            "decisions": decisions,
            "open_trajectories": sum(c.open_trajectories for c in self._copies or ()),
            "trajectories": [trajectory_to_dict(t) for t in out],
        }

    async def close(self) -> None:
        """Stop sampling (a running call returns after its current step) and close the env copies."""
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            async with self._lock:
                copies, self._copies = self._copies or [], None
                for copy in copies:
                    await copy.env.aclose()
