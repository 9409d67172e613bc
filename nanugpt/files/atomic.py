"""Writing files so that they appear only when complete: temporary name, fsync, rename.

A temporary is named ``.<name>.tmp-<host>-<pid>`` (a folder's previous content, kept until the new one is in
place: ``.<name>.old-<host>-<pid>``), so that a process killed before it could remove its own is recognised
by the next run, which removes it (``remove_stale_temporaries``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nanugpt.errors import UserError

TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?P<kind>tmp|old)-(?P<host>.+)-(?P<pid>\d+)$")


def temporary(path: Path, kind: str = "tmp") -> Path:
    """The name of this process's temporary (``tmp``) or set-aside (``old``) copy of ``path``, beside it."""
    return path.with_name(f".{path.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


class DiskFullError(UserError):
    """The file system ran out of space (or of the user's quota) while an artifact was written."""


def disk_full(exc: BaseException | None, path: Path, needed: int | None = None) -> DiskFullError | None:
    """A one-line ``DiskFullError`` for writing ``path`` where ``exc`` is, or was raised while handling, an
    out-of-space error (torch wraps the writer's ``OSError`` in a ``RuntimeError``); else None."""
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            break
        exc = exc.__cause__ or exc.__context__
    else:
        return None
    folder = path if path.is_dir() else path.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    wants = f", about {needed / 1e6:,.1f} MB needed" if needed else ""
    reason = "quota exceeded" if exc.errno == errno.EDQUOT else "disk full"
    return DiskFullError(
        f"{reason} while writing {path} ({free} in {folder}{wants}); nothing partial was left behind: free "
        "some space or point the folder elsewhere, then run again"
    )


@contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` keeps its
    previous content (or stays absent); running out of space is a one-line ``DiskFullError`` (``needed``: the
    bytes the file takes, for its message).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = disk_full(exc, path, needed)
        if full is not None:
            raise full from None
        raise


def _fsync(path: Path) -> None:
    """Flush a file's content or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; on success it is fsynced and renamed onto ``folder``.

    A previous ``folder`` is moved aside first and removed once the new one is
    in place; on any exception the temporary folder is removed and ``folder``
    keeps its previous content (or stays absent).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = temporary(folder), temporary(folder, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for path in tmp.iterdir():
            _fsync(path)
        _fsync(tmp)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        _fsync(folder.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        full = disk_full(exc, folder)
        if full is not None:
            raise full from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None: JSON has no such numbers, and a file with
    ``NaN`` in it is not JSON that other tools (``dvc metrics``, ``jq``) can read."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(value) for value in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write indented JSON; a non-finite float is written as null (``finite_json``)."""
    write_text(path, json.dumps(finite_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline to a log file with one write, then fsync it: a reader sees whole lines, except
    a last one cut short by a crash, which readers of such logs skip."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path, depth: int = 2) -> list[Path]:
    """Remove the temporaries that processes of this host which no longer run left in ``folder`` and its
    subfolders ``depth`` levels down; a set-aside folder whose new content never took its place is put back.
    Return what was removed or put back. A temporary of another host (a shared file system) is left alone:
    its process may be running."""
    host, handled = socket.gethostname(), []
    for entry in _entries(folder, depth):
        match = TEMPORARY.match(entry.name)
        if not match or match["host"] != host or _running(int(match["pid"])):
            continue
        target = entry.with_name(match["name"])
        if match["kind"] == "old" and not target.exists():
            os.replace(entry, target)  # killed between moving the previous content aside and the new one in
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        handled.append(entry)
    return handled


def _entries(folder: Path, depth: int) -> Iterator[Path]:
    """The entries of ``folder`` and of its subfolders down to ``depth`` levels (symbolic links not followed)."""
    try:
        children = list(folder.iterdir())
    except OSError:
        return
    for child in children:
        yield child
        if depth > 0 and child.is_dir() and not child.is_symlink() and not TEMPORARY.match(child.name):
            yield from _entries(child, depth - 1)


def _running(pid: int) -> bool:
    """True while process ``pid`` of this host exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
