"""MA-POCA (``trainer_type: poca``): PPO's actor, a centralised critic with a counterfactual baseline per group."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "GroupCritic": "asynctrainer.poca.networks",
    "POCATrainer": "asynctrainer.poca.trainer",
    "counterfactual_advantages": "asynctrainer.poca.advantages",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
