"""Imitation: behavioral cloning from demonstrations (names imported on first use)."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BehavioralCloning": "asynctrainer.imitation.bc",
    "bc_loss": "asynctrainer.imitation.losses",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
