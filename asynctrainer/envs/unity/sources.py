"""The Unity envs of a run config, as ``mlagents-learn`` makes them from its flags and YAML.

:func:`unity_env_factories` turns ``env_settings``/``engine_settings``/``environment_parameters``
into one :class:`UnityEnvFactory` per env: the Editor (no ``env_path``) on 5004, or
``num_envs`` built players on ``base_port + i``. A factory is a small picklable value, so a Ray
worker can build its players where it runs (:meth:`UnityEnvFactory.for_worker`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from asynctrainer.envs.unity.env import EDITOR_PORT, UnityEnv
from asynctrainer.envs.unity.launcher import PlayerLauncher, RestartPolicy, resolve_executable
from asynctrainer.envs.unity.side_channels import EngineConfig
from asynctrainer.errors import EnvError, SettingsError
from asynctrainer.runtime.curriculum import EnvironmentParameters
from asynctrainer.settings import RunSettings

__all__ = ["UnityEnvFactory", "is_unity_build", "run_seed", "unity_env_factories"]


def is_unity_build(env_path: str | os.PathLike[str] | None) -> bool:
    """Whether ``--env`` names a built player: an existing path (the build suffix may be left out)."""
    if env_path is None:
        return False
    if Path(env_path).exists():
        return True
    try:
        resolve_executable(env_path)
    except EnvError:
        return False
    return True


def run_seed(seed: int) -> int:
    """``--seed``, or a random integer in [0, 10000) for -1 (ML-Agents' rule)."""
    return seed if seed >= 0 else int(np.random.default_rng().integers(0, 10000))


@dataclass(frozen=True)
class UnityEnvFactory:
    """Makes and starts one :class:`UnityEnv` (``await factory()``): the Editor's, or player ``worker_id``'s."""

    port: int
    worker_id: int = 0
    env_path: str | None = None
    seed: int = 0
    num_areas: int = 1
    timeout_wait: float = 60.0
    engine: EngineConfig = field(default_factory=EngineConfig)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    no_graphics: bool = False
    no_graphics_monitor: bool = False
    log_dir: Path | None = None
    env_args: tuple[str, ...] = ()
    max_lifetime_restarts: int = 10
    restarts_rate_limit_n: int = 1
    restarts_rate_limit_period_s: float = 60.0

    def for_worker(self, worker_id: int) -> UnityEnvFactory:
        """This factory for player ``worker_id``: its own port (``base_port + worker_id``),
        log file and seed; what env workers on Ray call for each of their env copies."""
        if self.env_path is None:
            raise EnvError(
                f"Player {worker_id} cannot be launched: this factory waits for the Unity Editor on port "
                f"{self.port}, and only one Editor can connect. Give env_settings.env_path (--env) a built player."
            )
        return replace(self, worker_id=worker_id, port=self.port - self.worker_id + worker_id)

    def make(self) -> UnityEnv:
        """The env, not started (nothing listens yet)."""
        launcher = None
        if self.env_path is not None:
            launcher = PlayerLauncher(
                self.env_path,
                worker_id=self.worker_id,
                no_graphics=self.no_graphics,
                no_graphics_monitor=self.no_graphics_monitor,
                log_dir=self.log_dir,
                env_args=self.env_args,
            )
        return UnityEnv(
            self.port,
            launcher=launcher,
            worker_id=self.worker_id,
            seed=self.seed + self.worker_id,
            num_areas=self.num_areas,
            timeout_wait=self.timeout_wait,
            engine_config=self.engine,
            parameters=self.parameters,
            restart_policy=RestartPolicy(
                self.max_lifetime_restarts, self.restarts_rate_limit_n, self.restarts_rate_limit_period_s
            ),
        )

    async def __call__(self) -> UnityEnv:
        env = self.make()
        await env.start()
        return env


def unity_env_factories(
    settings: RunSettings, *, run_dir: Path | None = None, seed: int | None = None, editor_port: int | None = None
) -> list[UnityEnvFactory]:
    """One factory per env of the run: the Editor, or ``env_settings.num_envs`` players.

    :param run_dir: players write ``run_logs/Player-<i>.log`` there; None: Unity's default log.
    :param seed: the run's seed (default: ``env_settings.seed``, a random one for -1).
    :param editor_port: where to wait for the Editor (default 5004; the CLI passes ``--base-port``
        when it was given, which ML-Agents ignores there).
    With ``executor: ray`` the list has one factory, the driver's player 0 (its specs); each Ray
    worker launches its own players from it (:meth:`UnityEnvFactory.for_worker`).

    :raises SettingsError: several envs without a build (one Editor can connect, not N), or
        ``executor: ray`` without a build.
    """
    es = settings.env_settings
    if es.executor == "ray" and es.env_path is None:
        raise SettingsError(
            "env_settings.executor: ray launches Unity players inside the Ray workers, so it needs a built "
            "player in env_settings.env_path (--env); the Unity Editor connects to one trainer only. "
            "Use executor: local (the default) to train in the Editor.",
            key_path="env_settings.executor",
        )
    engine = settings.engine_settings
    env_seed = run_seed(es.seed) if seed is None else seed
    common: dict[str, Any] = {
        "seed": env_seed,
        "num_areas": es.num_areas,
        "timeout_wait": float(es.timeout_wait),
        "engine": EngineConfig(
            width=engine.width,
            height=engine.height,
            quality_level=engine.quality_level,
            time_scale=engine.time_scale,
            target_frame_rate=engine.target_frame_rate,
            capture_frame_rate=engine.capture_frame_rate,
        ),
        # The first lessons' values; a Runner sends each new lesson's with set_environment_parameters.
        "parameters": EnvironmentParameters(settings.environment_parameters, env_seed).values(),
    }
    if es.env_path is None:
        if es.num_envs > 1:
            raise SettingsError(
                f"env_settings.num_envs is {es.num_envs} without env_settings.env_path: only one Unity Editor can "
                "connect. Pass --env with a built player to train several copies, or --num-envs 1.",
                key_path="env_settings.num_envs",
            )
        return [UnityEnvFactory(port=EDITOR_PORT if editor_port is None else editor_port, **common)]
    return [
        UnityEnvFactory(
            port=es.base_port + i,
            worker_id=i,
            env_path=es.env_path,
            no_graphics=engine.no_graphics,
            no_graphics_monitor=engine.no_graphics_monitor,
            log_dir=None if run_dir is None else run_dir / "run_logs",
            env_args=tuple(es.env_args or ()),
            max_lifetime_restarts=es.max_lifetime_restarts,
            restarts_rate_limit_n=es.restarts_rate_limit_n,
            restarts_rate_limit_period_s=float(es.restarts_rate_limit_period_s),
            **common,
        )
        # With Ray this is the driver's player (it gives the behaviors' specs); the workers
        # launch their own from it with for_worker().
        for i in range(1 if es.executor == "ray" else es.num_envs)
    ]
