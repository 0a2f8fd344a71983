"""Proximal Policy Optimisation (``trainer_type: ppo``): the trainer, pure losses, GAE."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "PPOTrainer": "asynctrainer.ppo.trainer",
    "gae": "asynctrainer.ppo.gae",
    "gae_segments": "asynctrainer.ppo.gae",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
