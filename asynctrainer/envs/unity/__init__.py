"""Unity environments: ML-Agents' communicator on grpc.aio, player launching and side channels."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "EngineConfig": "asynctrainer.envs.unity.side_channels",
    "EnvironmentParametersChannel": "asynctrainer.envs.unity.side_channels",
    "IncomingMessage": "asynctrainer.envs.unity.side_channels",
    "OutgoingMessage": "asynctrainer.envs.unity.side_channels",
    "PlayerLauncher": "asynctrainer.envs.unity.launcher",
    "RestartPolicy": "asynctrainer.envs.unity.launcher",
    "SideChannel": "asynctrainer.envs.unity.side_channels",
    "UnityEnv": "asynctrainer.envs.unity.env",
    "UnityTimeoutError": "asynctrainer.envs.unity.env",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
