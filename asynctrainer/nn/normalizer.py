"""Running mean/variance of observations (ML-Agents' ``normalize: true``), in numpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Normalizer"]


class Normalizer:
    """Chan et al.'s parallel update of mean and variance; owned by the update thread."""

    def __init__(self, size: int) -> None:
        self.count = 0.0
        self.mean = np.zeros(size, np.float64)
        self.m2 = np.zeros(size, np.float64)

    def update(self, x: npt.NDArray[np.float32]) -> None:
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(axis=0, dtype=np.float64)
        batch_m2 = ((x - batch_mean) ** 2).sum(axis=0, dtype=np.float64)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> npt.NDArray[np.float32]:
        var = self.m2 / self.count if self.count > 1 else np.ones_like(self.m2)
        return np.sqrt(np.maximum(var, 1e-8)).astype(np.float32)

    def apply(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Normalise like :meth:`PolicySnapshot.normalize` (clipped to ±5)."""
        return np.clip((x - self.mean.astype(np.float32)) / self.std, -5.0, 5.0).astype(np.float32)

    def state(self) -> dict[str, npt.NDArray[np.float64]]:
        return {"count": np.array([self.count]), "mean": self.mean.copy(), "m2": self.m2.copy()}

    def load_state(self, state: dict[str, npt.NDArray[np.float64]]) -> None:
        self.count = float(state["count"][0])
        self.mean = np.array(state["mean"], np.float64)
        self.m2 = np.array(state["m2"], np.float64)
