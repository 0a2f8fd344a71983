"""Durable file writes: the one atomic-write mechanism every writer of the package uses.

A file is written to a temporary sibling, fsynced, renamed over its final name, and the parent
directory is fsynced, so a reader (or a crash) sees the old content or the new, never a part.
Every temporary carries :data:`TMP_MARK` in its name, so start-up clean-up finds each leftover
(``asynctrainer.checkpoints.format.cleanup_temporaries``).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

__all__ = [
    "TMP_MARK",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "is_temp_name",
    "temp_sibling",
]

#: In the name of every temporary this package writes, and in nothing else it writes.
TMP_MARK = ".tmp-"


def temp_sibling(path: Path, tag: str = "") -> Path:
    """A fresh temporary name beside ``path``: ``.<name><tag>.tmp-<random>``."""
    return path.with_name(f".{path.name}{tag}{TMP_MARK}{uuid.uuid4().hex[:8]}")


_TEMP_NAME = re.compile(rf"^\..+{re.escape(TMP_MARK)}[0-9a-f]{{8}}$")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` has the form :func:`temp_sibling` gives (and so may be cleaned up)."""
    return _TEMP_NAME.match(name) is not None


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the renames inside it are durable (a no-op where not POSIX)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root``, deepest first; links are not followed."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            file = Path(dirpath, name)
            if not file.is_symlink():
                fsync_file(file)
        fsync_dir(Path(dirpath))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync parent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))
