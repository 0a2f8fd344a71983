"""Gymnasium spaces ↔ asynctrainer specs: the one conversion the gymnasium and PettingZoo adapters share.

``Box`` observations keep their shape (rank 3 is an image, channel-last: a visual observation;
``uint8`` pixels are scaled to [0, 1] as Unity's cameras send them), ``Discrete`` ones become
one-hot vectors. ``Discrete``/``MultiDiscrete`` actions become discrete branches, ``Box`` actions
continuous ones in [−1, 1], scaled to the space's bounds where it has them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import DIM_NONE, DIM_TRANSLATIONAL_EQUIVARIANCE, ActionSpec, ObservationSpec
from asynctrainer.errors import SpecError

__all__ = ["action_spec_of", "env_actions", "observation_spec_of", "observations_of"]

F32 = npt.NDArray[np.float32]
#: Height, width, channels: how gymnasium lays out an image.
_IMAGE = (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)


def action_spec_of(space: Any) -> ActionSpec:
    """:raises SpecError: for a space other than Discrete, MultiDiscrete and Box."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return ActionSpec.create_discrete((int(space.n),))
    if isinstance(space, spaces.MultiDiscrete):
        return ActionSpec.create_discrete(tuple(int(n) for n in np.asarray(space.nvec).ravel()))
    if isinstance(space, spaces.Box):
        return ActionSpec.create_continuous(int(np.prod(space.shape)))
    raise SpecError(f"Gymnasium action space {space} is not supported; supported: Discrete, MultiDiscrete and Box.")


def observation_spec_of(space: Any, name: str = "obs_0") -> ObservationSpec:
    """:raises SpecError: for a space other than Box and Discrete."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        shape = tuple(int(d) for d in space.shape) or (1,)
        if len(shape) == 3:  # an image, channel-last (H, W, C): a visual observation
            return ObservationSpec(
                shape, name, (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_NONE)
            )
        return ObservationSpec(shape, name)
    if isinstance(space, spaces.Discrete):
        return ObservationSpec((int(space.n),), name)
    raise SpecError(f"Gymnasium observation space {space} is not supported; supported: Box and Discrete.")


def observations_of(space: Any, spec: ObservationSpec, raw: Any, source: str) -> F32:
    """A batch of raw observations of ``space`` (first axis: agents) as ``spec`` has them.

    :raises SpecError: naming ``source`` for a NaN or infinite observation.
    """
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        out = np.zeros((len(raw), int(space.n)), np.float32)
        out[np.arange(len(raw)), np.asarray(raw, np.int64) - int(space.start)] = 1.0
        return out
    obs = np.asarray(raw, np.float32).reshape(len(raw), *spec.shape)
    if spec.is_visual and space.dtype == np.uint8:
        obs *= 1.0 / 255.0  # pixels in [0, 1], as Unity's cameras send them
    if not np.isfinite(obs).all():
        raise SpecError(f"Env '{source}' returned a NaN or infinite observation.")
    return obs


def env_actions(space: Any, continuous: F32, discrete: npt.NDArray[np.int32]) -> Any:
    """The actions of a batch (first axis: agents) as values of ``space``."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return discrete[:, 0].astype(np.int64) + int(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return (discrete.astype(np.int64) + np.asarray(space.start).ravel()).reshape(-1, *space.shape)
    assert isinstance(space, spaces.Box)
    low, high = space.low.ravel(), space.high.ravel()
    a = continuous.astype(np.float64)
    bounded = np.isfinite(low) & np.isfinite(high)
    scaled = np.where(bounded, low + (a + 1.0) * 0.5 * (high - low), a)
    return scaled.reshape(-1, *space.shape).astype(space.dtype or np.float32)
