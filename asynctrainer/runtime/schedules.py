"""Hyperparameter schedules, as ML-Agents names them (``learning_rate_schedule``, ``beta_schedule``, ...)."""

from __future__ import annotations

__all__ = ["decayed_value"]


def decayed_value(schedule: str, initial: float, minimum: float, step: int, max_steps: int) -> float:
    """The value of a schedule at ``step``.

    ``constant`` keeps ``initial``; ``linear`` decays from ``initial`` at step 0 to ``minimum``
    at ``max_steps`` and stays there: ``(initial - minimum) * (1 - min(step / max_steps, 1)) + minimum``.
    """
    if schedule == "constant":
        return initial
    frac = min(max(step, 0) / max(max_steps, 1), 1.0)
    return (initial - minimum) * (1.0 - frac) + minimum
