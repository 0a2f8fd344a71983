"""Finding and starting a built Unity player, as ``mlagents-learn --env PATH`` does."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asynctrainer.errors import EnvError

__all__ = ["PlayerLauncher", "RestartPolicy", "player_arguments", "resolve_executable"]

logger = logging.getLogger("asynctrainer")

_SUFFIXES = (".app", ".exe", ".x86_64", ".x86")


def _strip_suffixes(path: str) -> str:
    for suffix in _SUFFIXES:
        path = path.replace(suffix, "")
    return path


def resolve_executable(env_path: str | os.PathLike[str], *, platform: str = sys.platform) -> Path:
    """The player executable ``env_path`` names, with Unity's platform rules.

    The build suffixes (``.app .exe .x86_64 .x86``) are optional. Linux tries ``p.x86_64``,
    ``p.x86``, then ``p``; macOS ``p.app/Contents/MacOS/<name>``; Windows ``p.exe`` or an
    ``.exe`` inside ``p/`` (not the crash handler).
    """
    stripped = _strip_suffixes(os.fspath(env_path))
    base = Path(stripped)
    candidates: list[Path] = []
    if platform.startswith("linux"):
        candidates = [base.with_name(base.name + ".x86_64"), base.with_name(base.name + ".x86"), base]
    elif platform == "darwin":
        macos = base.with_name(base.name + ".app") / "Contents" / "MacOS"
        candidates = [macos / base.name]
        if macos.is_dir():
            candidates += sorted(p for p in macos.iterdir() if p.is_file())
    else:
        candidates = [base.with_name(base.name + ".exe")]
        if base.is_dir():
            candidates += sorted(p for p in base.glob("*.exe") if not p.name.startswith("UnityCrashHandler"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise EnvError(
        f"Couldn't launch the {env_path} environment. Provided filename does not match any environments "
        f"(looked for: {', '.join(str(c) for c in candidates)})."
    )


def player_arguments(
    executable: Path,
    port: int,
    *,
    worker_id: int = 0,
    no_graphics: bool = False,
    no_graphics_monitor: bool = False,
    log_dir: Path | None = None,
    env_args: Sequence[str] = (),
) -> list[str]:
    """The command line of one player, in Unity's order: graphics flags, port, log file, the user's arguments."""
    args = [str(executable)]
    if no_graphics or (no_graphics_monitor and worker_id != 0):
        args += ["-nographics", "-batchmode"]
    args += ["--mlagents-port", str(port)]
    if log_dir is not None and not any(a.lower() == "-logfile" for a in env_args):
        args += ["-logFile", str(log_dir.resolve() / f"Player-{worker_id}.log")]
    return [*args, *env_args]


@dataclass
class RestartPolicy:
    """How often a crashed player may be relaunched (``--max-lifetime-restarts`` and the rate limit).

    -1 turns a limit off. With the defaults a player may restart 10 times in a run, at most once a minute.
    """

    max_lifetime_restarts: int = 10
    rate_limit_n: int = 1
    rate_limit_period_s: float = 60.0
    restarts: int = 0
    _recent: deque[float] = field(default_factory=deque)

    def allow(self, now: float | None = None) -> bool:
        """Whether one more restart is allowed now; if it is, it is counted."""
        now = time.monotonic() if now is None else now
        while self._recent and now - self._recent[0] > self.rate_limit_period_s:
            self._recent.popleft()
        if self.max_lifetime_restarts != -1 and self.restarts >= self.max_lifetime_restarts:
            return False
        if self.rate_limit_n != -1 and len(self._recent) >= self.rate_limit_n:
            return False
        self.restarts += 1
        self._recent.append(now)
        return True


class PlayerLauncher:
    """Starts one player process on a port; ``launch`` again for a restart."""

    def __init__(
        self,
        env_path: str | os.PathLike[str],
        *,
        worker_id: int = 0,
        no_graphics: bool = False,
        no_graphics_monitor: bool = False,
        log_dir: Path | None = None,
        env_args: Sequence[str] = (),
    ) -> None:
        self.executable = resolve_executable(env_path)
        self.worker_id = worker_id
        self.no_graphics = no_graphics
        self.no_graphics_monitor = no_graphics_monitor
        self.log_dir = log_dir
        self.env_args = tuple(env_args)

    def arguments(self, port: int) -> list[str]:
        return player_arguments(
            self.executable,
            port,
            worker_id=self.worker_id,
            no_graphics=self.no_graphics,
            no_graphics_monitor=self.no_graphics_monitor,
            log_dir=self.log_dir,
            env_args=self.env_args,
        )

    async def launch(self, port: int) -> asyncio.subprocess.Process:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        args = self.arguments(port)
        debug = logger.isEnabledFor(logging.DEBUG)
        output = None if debug else subprocess.DEVNULL
        try:
            return await asyncio.create_subprocess_exec(
                *args, stdout=output, stderr=output, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except PermissionError as exc:
            raise EnvError(
                f"Couldn't launch {self.executable}: permission denied ({exc.strerror}). Make the build executable "
                f"with: chmod -R 755 {self.executable.parent}"
            ) from exc
        except OSError as exc:
            raise EnvError(f"Couldn't launch {self.executable}: {exc.strerror or exc}.") from exc
