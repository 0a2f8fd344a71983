"""Soft Actor-Critic: trainer, pure losses and the replay buffer (``trainer_type: sac``)."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ReplayBuffer": "asynctrainer.sac.replay_buffer",
    "SACNetworks": "asynctrainer.sac.networks",
    "SACTrainer": "asynctrainer.sac.trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
