"""Checksums beside artifacts: ``<file>.sha256`` holds a file's sha256 and size, written after the file itself.

A checkpoint or ``meta.json`` is written under its name first and its checksum after, so a file with a
checksum that disagrees is damaged, never half-written: a write killed before the checksum leaves a file
without one (read as unverified). A file about to be replaced has its checksum removed first
(``drop_checksum``), so an old checksum never meets a new file.

Verification (``problem``) has three modes: ``size`` compares sizes only (catches truncation), ``full`` hashes
the whole file (catches any flipped bit), and ``auto`` hashes files up to ``FULL_MAX_BYTES`` and compares the
size of larger ones, where reading them once more would cost as much as loading them.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Literal

from nanugpt.files.atomic import write_json
from nanugpt.files.hashing import sha256_file

Verify = Literal["auto", "full", "size"]
SUFFIX = ".sha256"
FULL_MAX_BYTES = 1 << 30


def checksum_path(path: Path) -> Path:
    """Where the checksum of ``path`` is kept: ``<name>.sha256`` beside it."""
    return path.with_name(path.name + SUFFIX)


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what it passes to ``file`` (``torch.save`` writes through it,
    so a checkpoint is hashed as it is written, not read again)."""

    def __init__(self, file: io.BufferedWriter):
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)


def file_record(path: Path) -> dict[str, object]:
    """The checksum of ``path`` as it is kept: its sha256 (the file read whole) and its size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_checksum(path: Path, sha256: str | None = None, size: int | None = None) -> None:
    """Write the checksum of ``path`` (``sha256`` and ``size`` when the writer hashed it, else read from disk)."""
    record = file_record(path) if sha256 is None or size is None else {"sha256": sha256, "bytes": size}
    write_json(checksum_path(path), record)


def drop_checksum(path: Path) -> None:
    """Remove the checksum of ``path`` before ``path`` is replaced."""
    checksum_path(path).unlink(missing_ok=True)


def read_checksum(kept: Path) -> dict[str, object] | None:
    """The checksum in the file ``kept``; None where there is none; a damaged checksum file as an empty record."""
    if not kept.exists():
        return None
    try:
        record = json.loads(kept.read_bytes())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def problem(path: Path, verify: Verify = "auto", kept: Path | None = None) -> str | None:
    """Why ``path`` does not match its checksum (the one in ``kept``, by default beside it), or None when it
    matches or has none."""
    kept = kept or checksum_path(path)
    return record_problem(path, read_checksum(kept), verify, kept.name)


def record_problem(path: Path, record: dict[str, object] | None, verify: Verify, kept_in: str) -> str | None:
    """Why ``path`` does not match ``record`` (a checksum read from the file named ``kept_in``), or None when it
    matches or there is no record."""
    if record is None:
        return None
    expected_sha, expected_size = record.get("sha256"), record.get("bytes")
    if not isinstance(expected_sha, str) or not isinstance(expected_size, int):
        return f"its checksum in {kept_in} is damaged"
    size = path.stat().st_size
    if size != expected_size:
        return f"{size} bytes where {kept_in} says {expected_size}"
    if verify == "full" or (verify == "auto" and size <= FULL_MAX_BYTES):
        if sha256_file(path) != expected_sha:
            return f"its sha256 differs from the one in {kept_in}"
    return None
