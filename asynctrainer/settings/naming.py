"""The one rule that names a behavior after an env id.

Both the gymnasium adapter (which names its env's only behavior) and
:meth:`~asynctrainer.settings.RunSettings.resolve_behavior_name` (which maps a single-behavior
env to a configured behavior) use :func:`behavior_name_for`, so the two never disagree.
"""

from __future__ import annotations

import re

__all__ = ["behavior_name_for"]

_VERSION = re.compile(r"-v\d+$")


def behavior_name_for(env_id: str) -> str:
    """The behavior name of an env id: its last part, without a ``-vN`` version.

    ``CartPole-v1`` → ``CartPole``; ``ALE/Pong-v5`` → ``Pong``; ``pkg.mod:make_env`` →
    ``make_env``; ``builds/envs/Walker`` or ``builds\\envs\\Walker`` → ``Walker``. Empty when
    the id has no name left (``""``, ``"dir/"``).
    """
    name = re.split(r"[/\\]", env_id)[-1].rsplit(":", 1)[-1]
    without_version = _VERSION.sub("", name)
    return without_version or name
