"""What a learned reward signal is to a trainer.

A trainer keeps the env's reward (``extrinsic``) itself and asks each learned signal, on its
update thread, for the rewards of a batch of transitions (:meth:`RewardSignal.evaluate`) and to
learn from the same minibatches its policy update used (:meth:`RewardSignal.update`). Each
signal has its own value head, discount and GAE in the trainer; its networks are not part of the
exported policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import ActionSpec
from asynctrainer.nn.normalizer import Normalizer
from asynctrainer.settings import NetworkSettings, RewardSignalSettings

__all__ = [
    "LEARNED_SIGNALS",
    "RewardSignal",
    "RewardStream",
    "SignalBatch",
    "reward_streams",
    "signal_network",
    "signal_state",
]

F32 = npt.NDArray[np.float32]

#: The learned signals a trainer can build, by their ``reward_signals`` key.
LEARNED_SIGNALS = ("curiosity", "rnd")


@dataclass(frozen=True)
class SignalBatch:
    """Transitions ``(s, a, s')`` as flat vectors, ``[n, ...]`` each.

    :ivar discrete_onehot: the discrete actions as one one-hot block per branch, ``[n, Σ branches]``.
    :ivar done: 1 where the episode ended after the action (a terminal, not a cut), ``[n, 1]``.
    """

    obs: F32
    next_obs: F32
    continuous: F32
    discrete_onehot: F32
    done: F32

    @classmethod
    def create(
        cls,
        obs: F32,
        next_obs: F32,
        continuous: F32,
        discrete: npt.NDArray[np.int32],
        spec: ActionSpec,
        done: npt.NDArray[np.bool_] | None = None,
    ) -> SignalBatch:
        n = obs.shape[0]
        ended = np.zeros((n, 1), np.float32) if done is None else done.astype(np.float32).reshape(n, 1)
        return cls(obs, next_obs, continuous.astype(np.float32), spec.one_hot(discrete), ended)

    def __len__(self) -> int:
        return int(self.obs.shape[0])


class RewardSignal(Protocol):
    """One learned reward signal (runs on the trainer's update thread)."""

    #: The ``reward_signals`` key (``curiosity``) and ML-Agents' stat name (``Curiosity``).
    key: str
    stat_name: str
    gamma: float
    strength: float
    #: Whether the return bootstraps across episode ends (curiosity and RND do, as in ML-Agents).
    ignore_done: bool
    #: The signal's own observation statistics (``network_settings.normalize``), or None.
    normalizer: Normalizer | None

    def evaluate(self, batch: SignalBatch) -> F32:
        """Each transition's reward, already multiplied by ``strength``, ``[n]``."""
        ...

    def update(self, batch: SignalBatch, minibatches: npt.NDArray[np.int32]) -> tuple[dict[str, float], bool]:
        """One gradient step per row of ``minibatches`` (indices into ``batch``).

        Returns the mean losses by stat name, and whether every loss was finite.
        """
        ...

    def weights(self) -> Mapping[str, Any]:
        """Learned variables by stable name (checkpointed under the signal's key)."""
        ...

    def optimizer(self) -> Any: ...

    def variables(self) -> Mapping[str, Any]:
        """Other variables a checkpoint keeps (e.g. the update counter)."""
        ...


def signal_network(settings: RewardSignalSettings) -> NetworkSettings:
    """A signal's own network: its ``network_settings``, else ML-Agents' defaults (128 units × 2).

    The deprecated ``encoding_size`` sets the units when ``network_settings`` is not given.
    """
    if settings.network_settings is not None:
        return settings.network_settings
    if settings.encoding_size is not None:
        return NetworkSettings(hidden_units=settings.encoding_size)
    return NetworkSettings()


@dataclass(frozen=True)
class RewardStream:
    """One reward stream of a trainer: a value head, a discount, whether it stops at terminals."""

    key: str
    #: ML-Agents' stat name: ``Extrinsic``, ``Curiosity``, ``Rnd``, ``Gail``.
    stat_name: str
    gamma: float
    ignore_done: bool


def reward_streams(signals: Mapping[str, RewardSignalSettings]) -> list[RewardStream]:
    """The streams of ``reward_signals``: ``extrinsic`` first when configured, then the learned ones in order.

    Only the env's reward and GAIL's stop bootstrapping at an episode's end (ML-Agents' ``ignore_done``).
    """
    order = [k for k in signals if k == "extrinsic"] + [k for k in signals if k != "extrinsic"]
    return [RewardStream(k, k.capitalize(), float(signals[k].gamma), k not in ("extrinsic", "gail")) for k in order]


def signal_state(
    signals: Sequence[RewardSignal],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Normalizer]]:
    """What a trainer checkpoints of its signals: weights (under ``<key>/``), optimizers, variables, normalisers."""
    weights: dict[str, Any] = {}
    optimizers: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    normalizers: dict[str, Normalizer] = {}
    for signal in signals:
        weights.update({f"{signal.key}/{k}": v for k, v in signal.weights().items()})
        optimizers[signal.key] = signal.optimizer()
        variables.update(signal.variables())
        if signal.normalizer is not None:
            normalizers[signal.key] = signal.normalizer
    return weights, optimizers, variables, normalizers
