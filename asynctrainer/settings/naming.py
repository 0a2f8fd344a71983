"""The one rule that names a behavior after an env id.

Both the gymnasium adapter (which names its env's only behavior) and
:meth:`~asynctrainer.settings.RunSettings.resolve_behavior_name` (which maps a single-behavior
env to a configured behavior) use :func:`behavior_name_for`, so the two never disagree.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

from asynctrainer.errors import EnvError

__all__ = ["behavior_name_for", "split_behavior_id"]

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


def split_behavior_id(behavior_id: str) -> tuple[str, int]:
    """Unity's behavior id ``Name?team=N`` → ``("Name", N)``; the team is 0 when absent.

    The trainer of a behavior is named by the name alone: the teams of one name share it.
    """
    if "?" not in behavior_id:
        return behavior_id, 0
    parsed = urlparse(behavior_id)
    teams = parse_qs(parsed.query).get("team")
    try:
        team = int(teams[0]) if teams else 0
    except ValueError:
        raise EnvError(f"The behavior id '{behavior_id}' has a team that is not an integer (Name?team=N).") from None
    return parsed.path, team
