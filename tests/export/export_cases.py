"""The policies the ONNX and SavedModel export tests run on, by name."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.testing.fakes import random_snapshot

TWO_OBS = (ObservationSpec((3,)), ObservationSpec((2,)))


def readonly(a: Any) -> np.ndarray:
    arr = np.array(a, dtype=np.float32, copy=True)
    arr.setflags(write=False)
    return arr


def make_snapshot(case: str) -> PolicySnapshot:
    """The policies every export test runs on, by name."""
    if case == "discrete":
        return random_snapshot(
            "Disc", BehaviorSpec((ObservationSpec((4,)),), ActionSpec.create_discrete((3,))), 1, 1, 16
        )
    if case == "multi-discrete":
        return random_snapshot("Multi", BehaviorSpec(TWO_OBS, ActionSpec.create_discrete((2, 4))), 2, 2, 16)
    if case == "continuous":
        return random_snapshot("Cont", BehaviorSpec(TWO_OBS, ActionSpec.create_continuous(2)), 3, 3, 16)
    if case == "hybrid":
        return random_snapshot("Hybrid", BehaviorSpec(TWO_OBS, ActionSpec(2, (3,))), 4, 4, 16)
    if case == "tanh":
        snap = random_snapshot("Tanh", BehaviorSpec(TWO_OBS, ActionSpec.create_continuous(2)), 5, 5, 16)
        return dataclasses.replace(snap, tanh_squash=True)
    if case == "normalized":
        snap = random_snapshot("Norm", BehaviorSpec(TWO_OBS, ActionSpec(2, (3, 2))), 6, 6, 16)
        rng = np.random.default_rng(60)
        return dataclasses.replace(
            snap, obs_mean=readonly(rng.normal(size=5)), obs_std=readonly(rng.uniform(0.5, 2.0, size=5))
        )
    if case == "two-layers":
        rng = np.random.default_rng(7)
        return PolicySnapshot.create(
            "Deep",
            7,
            700,
            BehaviorSpec(TWO_OBS, ActionSpec(1, (2, 3))),
            hidden=[(rng.normal(size=(5, 12)), rng.normal(size=12)), (rng.normal(size=(12, 8)), rng.normal(size=8))],
            discrete_head=(rng.normal(size=(8, 5)), rng.normal(size=5)),
            continuous_head=(rng.normal(size=(8, 1)), rng.normal(size=1)),
            log_std=np.full(1, -0.5),
        )
    raise AssertionError(case)
