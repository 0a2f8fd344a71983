"""Learned reward signals: curiosity and RND (names imported on first use)."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CuriositySignal": "asynctrainer.rewards.curiosity",
    "RNDSignal": "asynctrainer.rewards.rnd",
    "RewardSignal": "asynctrainer.rewards.signals",
    "SignalBatch": "asynctrainer.rewards.signals",
    "create_reward_signals": "asynctrainer.rewards.factory",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
