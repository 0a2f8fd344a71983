"""Building a trainer's learned reward signals from its ``reward_signals``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from asynctrainer.demos.reader import load_demonstration
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.rewards.curiosity import CuriositySignal
from asynctrainer.rewards.gail import GAILSignal
from asynctrainer.rewards.rnd import RNDSignal
from asynctrainer.rewards.signals import RewardSignal
from asynctrainer.settings import RewardSignalSettings

__all__ = ["create_reward_signals"]


def create_reward_signals(
    signals: Mapping[str, RewardSignalSettings],
    spec: BehaviorSpec,
    seed: int,
    *,
    behavior_name: str,
    rng: np.random.Generator,
) -> list[RewardSignal]:
    """The learned signals of ``signals``, in their order (``extrinsic`` is the trainer's own).

    ``rng`` is the trainer's generator (GAIL's expert draws); GAIL's demonstration is read here
    and checked against ``spec``.

    :raises DemonstrationError: when GAIL's ``demo_path`` cannot be read or does not fit the behavior.
    """
    out: list[RewardSignal] = []
    for i, (key, settings) in enumerate(signals.items()):
        own_seed = seed + 1000 * (i + 1)
        if key == "curiosity":
            out.append(CuriositySignal(spec, settings, seed=own_seed))
        elif key == "rnd":
            out.append(RNDSignal(spec, settings, seed=own_seed))
        elif key == "gail":
            assert settings.demo_path is not None  # required by the settings
            demo = load_demonstration(settings.demo_path)
            demo.check_spec(spec, behavior_name)
            out.append(GAILSignal(spec, settings, seed=own_seed, expert=demo.transitions(), rng=rng))
    return out
