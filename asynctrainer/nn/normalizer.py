"""Running mean/variance of observations (ML-Agents' ``normalize: true``), in numpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import BehaviorSpec

__all__ = ["Normalizer"]


class Normalizer:
    """Chan et al.'s parallel update of mean and variance; owned by the update thread.

    :param columns: the columns of a flat observation row it learns; the others pass through
        (mean 0, std 1). All by default; :meth:`for_spec` keeps visual and variable-length observations
        out, as ML-Agents normalises vector observations only.
    """

    def __init__(self, size: int, columns: npt.NDArray[np.intp] | None = None) -> None:
        self.count = 0.0
        self.mean = np.zeros(size, np.float64)
        self.m2 = np.zeros(size, np.float64)
        self._columns = None if columns is None or len(columns) == size else np.asarray(columns, np.intp)

    @classmethod
    def for_spec(cls, spec: BehaviorSpec) -> Normalizer:
        """A normaliser of the spec's vector observations within its flat rows."""
        columns: list[npt.NDArray[np.intp]] = []
        start = 0
        for o in spec.observation_specs:
            if not (o.is_visual or o.is_variable_length):
                columns.append(np.arange(start, start + o.size, dtype=np.intp))
            start += o.size
        return cls(start, np.concatenate(columns) if columns else np.zeros(0, np.intp))

    def update(self, x: npt.NDArray[np.float32]) -> None:
        n = x.shape[0]
        if n == 0:
            return
        if self._columns is not None:
            cols = self._columns
            part = Normalizer(len(cols))
            part.count, part.mean, part.m2 = self.count, self.mean[cols], self.m2[cols]
            part.update(x[:, cols])
            self.count, self.mean[cols], self.m2[cols] = part.count, part.mean, part.m2
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
        std = np.sqrt(np.maximum(var, 1e-8)).astype(np.float32)
        if self._columns is not None:
            passed = np.ones_like(std)
            passed[self._columns] = std[self._columns]
            std = passed
        return std

    def apply(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Normalise like :meth:`PolicySnapshot.normalize` (clipped to ±5)."""
        return np.clip((x - self.mean.astype(np.float32)) / self.std, -5.0, 5.0).astype(np.float32)

    def state(self) -> dict[str, npt.NDArray[np.float64]]:
        return {"count": np.array([self.count]), "mean": self.mean.copy(), "m2": self.m2.copy()}

    def load_state(self, state: dict[str, npt.NDArray[np.float64]]) -> None:
        self.count = float(state["count"][0])
        self.mean = np.array(state["mean"], np.float64)
        self.m2 = np.array(state["m2"], np.float64)
