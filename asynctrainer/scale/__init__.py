"""Scale-out: env loops as Ray actors, the learner in the driver's loop.

Nothing here imports Ray until an executor runs: ``import asynctrainer.scale`` is cheap and
works without the ``ray`` extra.
"""

from __future__ import annotations

import importlib.util

from asynctrainer.errors import SettingsError

__all__ = ["RAY_EXTRA_HINT", "require_ray"]

RAY_EXTRA_HINT = "pip install 'asynctrainer[ray]'"


def require_ray() -> None:
    """Check that Ray can be imported, for ``env_settings.executor: ray``.

    :raises SettingsError: naming the ``ray`` extra when Ray is not installed.
    """
    if importlib.util.find_spec("ray") is None:
        raise SettingsError(
            f"env_settings.executor: 'ray' needs Ray, which is not installed; install the ray extra: {RAY_EXTRA_HINT}.",
            key_path="env_settings.executor",
        )
