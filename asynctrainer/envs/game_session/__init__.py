"""GameSession: an :class:`~asynctrainer.envs.base.AsyncEnv` fed by a host program's ``decide()`` calls.

The package splits by concern: :mod:`.session` is the public API (``decide``, ``decide_batch``,
``leave`` and the env loop's ``reset`` / ``step``), :mod:`.validation` checks what the host
passes, :mod:`.batcher` gathers queued calls into batches and hands actions back, and
:mod:`.entries` holds what the session remembers per call and per agent.
"""

from asynctrainer.envs.game_session.entries import AgentAction
from asynctrainer.envs.game_session.session import GameSession, SessionStats

__all__ = ["AgentAction", "GameSession", "SessionStats"]
