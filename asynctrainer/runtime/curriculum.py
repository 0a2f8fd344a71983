"""Environment parameters and curricula (``environment_parameters``), as ML-Agents' parameter manager runs them.

Each parameter is a constant, a sampler or a curriculum: a list of lessons, each with a value
(a constant or a sampler) and, but for the last, completion criteria. A one-value parameter is
a curriculum of one lesson. :meth:`EnvironmentParameters.update` runs ML-Agents' advance rule:

- fewer than ``min_lesson_length`` episodes of the criteria's behavior since the last advance:
  no advance, whatever the measure;
- ``progress``: advance when ``step / max_steps > threshold``;
- ``reward``: ``m`` = the mean return of the behavior's last ``max(1, L)`` episodes (``L`` the
  largest ``min_lesson_length`` naming that behavior); with ``signal_smoothing``,
  ``m ← 0.25 · previous + 0.75 · m`` (the previous starts at 0 and is kept per parameter);
  advance when ``m > threshold``;
- at most one lesson per parameter per call.

A sampler's ``seed`` of -1 (or none) becomes ``run_seed + k``, ``k`` counting lessons in
declaration order across all parameters, so no two samplers draw alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asynctrainer.errors import UsageError

__all__ = ["CompletionCriteria", "EnvironmentParameters", "Lesson", "ParameterSampler"]

logger = logging.getLogger("asynctrainer")

#: Weight of the previous smoothed reward (ML-Agents' ``signal_smoothing``).
SMOOTHING = 0.25


@dataclass(frozen=True)
class CompletionCriteria:
    behavior: str
    measure: str = "reward"
    threshold: float = 0.0
    min_lesson_length: int = 0
    signal_smoothing: bool = True
    require_reset: bool = False


@dataclass(frozen=True)
class Lesson:
    """One lesson: ``value`` is a float or a sampler ``{sampler_type, sampler_parameters}`` with its seed."""

    name: str
    value: float | Mapping[str, Any]
    criteria: CompletionCriteria | None


def _value(raw: Any, seed: int) -> float | dict[str, Any]:
    if not isinstance(raw, Mapping):
        return float(raw)
    arguments = dict(raw["sampler_parameters"])
    if int(arguments.get("seed", -1)) == -1:
        arguments["seed"] = seed
    return {"sampler_type": raw["sampler_type"], "sampler_parameters": arguments}


class EnvironmentParameters:
    """The current lesson of every parameter, and the values to send to envs.

    :param parameters: the config's ``environment_parameters`` (validated by the settings).
    :param run_seed: the run's seed, for samplers without their own.
    """

    def __init__(self, parameters: Mapping[str, Any] | None, run_seed: int) -> None:
        self.curricula: dict[str, list[Lesson]] = {}
        k = 0
        for name, raw in (parameters or {}).items():
            entries = raw["curriculum"] if isinstance(raw, Mapping) and "curriculum" in raw else [{"value": raw}]
            lessons = []
            for index, entry in enumerate(entries):
                criteria = entry.get("completion_criteria")
                last = index == len(entries) - 1
                lessons.append(
                    Lesson(
                        str(entry.get("name", f"{name}_{index}")),
                        _value(entry["value"], run_seed + k),
                        None if criteria is None or last else CompletionCriteria(**criteria),
                    )
                )
                k += 1
            self.curricula[name] = lessons
        self.lessons = dict.fromkeys(self.curricula, 0)
        self._smoothed = dict.fromkeys(self.curricula, 0.0)

    def __bool__(self) -> bool:
        return bool(self.curricula)

    @property
    def behaviors(self) -> set[str]:
        """The behaviors the completion criteria name."""
        return {
            lesson.criteria.behavior
            for lessons in self.curricula.values()
            for lesson in lessons
            if lesson.criteria is not None
        }

    def check_behaviors(self, trained: Sequence[str]) -> None:
        """:raises UsageError: a criterion names a behavior the run does not train."""
        unknown = sorted(self.behaviors - set(trained))
        if unknown:
            raise UsageError(
                f"environment_parameters: completion_criteria name the behavior {unknown[0]!r}, which this run "
                f"does not train (its behaviors: {', '.join(sorted(trained)) or 'none'})."
            )

    def window(self, behavior: str) -> int:
        """How many of the behavior's newest episode returns the reward measure averages: max(1, largest L)."""
        lengths = [
            lesson.criteria.min_lesson_length
            for lessons in self.curricula.values()
            for lesson in lessons
            if lesson.criteria is not None and lesson.criteria.behavior == behavior
        ]
        return max([1, *lengths])

    def values(self) -> dict[str, float | Mapping[str, Any]]:
        """Every parameter's value in its current lesson (a float, or a sampler with its seed)."""
        return {name: lessons[self.lessons[name]].value for name, lessons in self.curricula.items()}

    def update(self, progress: Mapping[str, float], returns: Mapping[str, Sequence[float]]) -> tuple[bool, bool]:
        """Advance the lessons whose criteria are met.

        :param progress: each behavior's ``step / max_steps``.
        :param returns: each behavior's returns since the last advance, newest first.
        :returns: (some lesson advanced, an advanced lesson asks for a reset).
        """
        advanced = reset = False
        for name, lessons in self.curricula.items():
            lesson = lessons[self.lessons[name]]
            criteria = lesson.criteria
            if criteria is None or criteria.behavior not in progress:
                continue
            episodes = list(returns.get(criteria.behavior, ()))
            if len(episodes) < criteria.min_lesson_length:
                continue
            if criteria.measure == "progress":
                done = progress[criteria.behavior] > criteria.threshold
            else:
                recent = episodes[: self.window(criteria.behavior)]
                if not recent or not all(math.isfinite(r) for r in recent):
                    continue
                measure = sum(recent) / len(recent)
                if criteria.signal_smoothing:
                    measure = SMOOTHING * self._smoothed[name] + (1.0 - SMOOTHING) * measure
                    self._smoothed[name] = measure
                done = measure > criteria.threshold
            if done:
                self.lessons[name] += 1
                new = lessons[self.lessons[name]]
                logger.info("Parameter '%s' is in lesson '%s' and has value '%s'.", name, new.name, new.value)
                advanced = True
                reset = reset or criteria.require_reset
        return advanced, reset

    def restore(self, lessons: Mapping[str, int]) -> None:
        """Continue at saved lesson numbers (``--resume``); parameters no longer configured are ignored."""
        for name, number in lessons.items():
            if name in self.lessons:
                self.lessons[name] = max(0, min(int(number), len(self.curricula[name]) - 1))


class ParameterSampler:
    """Draws values for :meth:`EnvironmentParameters.values` where the env does not sample itself (Unity does).

    A constant is itself; a sampler draws with a generator of its own seed: ``uniform`` in
    ``[min_value, max_value)``, ``gaussian`` ``N(mean, st_dev)``, ``multirangeuniform`` an interval
    chosen in proportion to its width and then uniform in it (Unity's samplers), ``constant`` its value.
    """

    def __init__(self, values: Mapping[str, float | Mapping[str, Any]]) -> None:
        self.values = dict(values)
        self._rngs = {
            name: np.random.default_rng(int(v["sampler_parameters"]["seed"]))
            for name, v in self.values.items()
            if isinstance(v, Mapping)
        }

    def draw(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, value in self.values.items():
            if not isinstance(value, Mapping):
                out[name] = float(value)
                continue
            rng, args, kind = self._rngs[name], value["sampler_parameters"], value["sampler_type"]
            if kind == "uniform":
                out[name] = float(rng.uniform(float(args["min_value"]), float(args["max_value"])))
            elif kind == "gaussian":
                out[name] = float(rng.normal(float(args["mean"]), float(args["st_dev"])))
            elif kind == "multirangeuniform":
                intervals = np.asarray(args["intervals"], np.float64).reshape(-1, 2)
                widths = intervals[:, 1] - intervals[:, 0]
                total = widths.sum()
                k = int(rng.choice(len(intervals), p=widths / total)) if total > 0 else 0
                out[name] = float(rng.uniform(intervals[k, 0], intervals[k, 1]))
            else:
                out[name] = float(args["value"])
        return out
