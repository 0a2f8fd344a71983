"""Envs: the AsyncEnv protocol and specs, the gymnasium adapter, GameSession (names imported on first use)."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ActionBatch": "asynctrainer.envs.spec",
    "ActionSpec": "asynctrainer.envs.spec",
    "AgentAction": "asynctrainer.envs.game_session",
    "AsyncEnv": "asynctrainer.envs.base",
    "BehaviorSpec": "asynctrainer.envs.spec",
    "DecisionSteps": "asynctrainer.envs.spec",
    "GameSession": "asynctrainer.envs.game_session",
    "GymnasiumEnv": "asynctrainer.envs.gymnasium_env",
    "ObservationSpec": "asynctrainer.envs.spec",
    "SessionStats": "asynctrainer.envs.game_session",
    "StepBatch": "asynctrainer.envs.spec",
    "TerminalSteps": "asynctrainer.envs.spec",
    "load_env": "asynctrainer.envs.gymnasium_env",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
