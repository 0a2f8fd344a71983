"""Console notices of config loading: deprecated keys, and keys accepted that do nothing yet.

A notice is logged through the ``asynctrainer`` logger as a warning, once per key per load:
while a top-level validation runs (:func:`collecting`), notices are gathered by key and logged
when it ends, so a key met in several behaviors (or in ``default_settings`` and every behavior it
is merged into) is reported once. Outside a validation a notice is logged at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["collecting", "notice", "silenced"]

logger = logging.getLogger("asynctrainer")

_pending: ContextVar[dict[str, str] | None] = ContextVar("asynctrainer_settings_notices", default=None)


def notice(key: str, message: str) -> None:
    """Reports ``message`` about the config key ``key``, once per key while a load collects."""
    pending = _pending.get()
    if pending is None:
        logger.warning(message)
    else:
        pending.setdefault(key, message)


@contextmanager
def collecting() -> Iterator[None]:
    """Gathers the notices of one load and logs each key's once when it ends (also on an error)."""
    if _pending.get() is not None:  # a nested validation: the outer load logs
        yield
        return
    pending: dict[str, str] = {}
    token = _pending.set(pending)
    try:
        yield
    finally:
        _pending.reset(token)
        for message in pending.values():
            logger.warning(message)


@contextmanager
def silenced() -> Iterator[None]:
    """Drops the notices of the validations inside (for a config validated again, already reported)."""
    token = _pending.set({})
    try:
        yield
    finally:
        _pending.reset(token)
