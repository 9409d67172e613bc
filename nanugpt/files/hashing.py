"""Checksums of files, read in blocks so memory stays flat."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nanugpt.errors import UserError


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, what: str, *, expected: str | None, key: str, error: type[UserError]) -> None:
    """Raise ``error`` unless ``path``'s sha256 is ``expected`` (None: not checked); the message names ``what`` the
    file is and the params ``key`` that pins it, with the value to pin it to. With all but ``path`` and ``what``
    bound (``functools.partial``), it is the check that ``download_once`` takes."""
    if expected and (actual := sha256_file(path)) != expected:
        raise error(
            f"{what} {path}: sha256 is {actual}, expected {expected} ({key}); if this is the file you mean, pin it "
            f"with --{key} {actual} (or skip the check: --{key} null)"
        )
