"""Downloads kept once: a file fetched into a local folder, checked before it appears there."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from nanugpt.files.atomic import atomic_path


class DownloadFailed(Exception):
    """A URL that could not be fetched; the message says why (callers add how to work offline)."""


def file_name(url: str) -> str:
    """The last part of ``url``'s path: the name its download is kept under."""
    return Path(urllib.request.urlparse(url).path).name or "download"


def download_once(url: str, target: Path, check: Callable[[Path, str], None], timeout_s: float) -> Path:
    """``target``, downloaded from ``url`` unless it exists. ``check(path, what)`` raises on a wrong file: a kept
    copy is checked as it is, a download before it takes ``target``'s name (a bad one never appears)."""
    if target.is_file():
        check(target, "the downloaded copy")
        return target
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            check(tmp, f"the download of {url}")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadFailed(f"cannot download {url} ({exc})") from None
    return target
