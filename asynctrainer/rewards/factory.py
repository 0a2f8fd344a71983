"""Building a trainer's learned reward signals from its ``reward_signals``."""

from __future__ import annotations

from collections.abc import Mapping

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.rewards.curiosity import CuriositySignal
from asynctrainer.rewards.rnd import RNDSignal
from asynctrainer.rewards.signals import RewardSignal
from asynctrainer.settings import RewardSignalSettings

__all__ = ["create_reward_signals"]


def create_reward_signals(
    signals: Mapping[str, RewardSignalSettings], spec: BehaviorSpec, seed: int
) -> list[RewardSignal]:
    """The learned signals of ``signals``, in their order (``extrinsic`` is the trainer's own)."""
    out: list[RewardSignal] = []
    for i, (key, settings) in enumerate(signals.items()):
        if key == "curiosity":
            out.append(CuriositySignal(spec, settings, seed=seed + 1000 * (i + 1)))
        elif key == "rnd":
            out.append(RNDSignal(spec, settings, seed=seed + 1000 * (i + 1)))
    return out
