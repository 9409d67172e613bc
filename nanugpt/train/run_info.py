"""``run_info.json``: what is needed to reproduce a run, and no secrets.

Holds the git commit and dirty flag, the resolved params, library versions,
device, world size and the launch command. The process environment is never
recorded.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "numpy", "pydantic", "tiktoken", "dvc", "snakemake")


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """The current commit and whether the work tree has uncommitted changes (None outside git)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": bool(dirty)}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a run's numbers."""
    versions: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def collect(
    params: dict[str, Any], device: str, world_size: int, hosts: dict[str, list[int]], launch_command: str | None
) -> dict[str, Any]:
    """The content of ``run_info.json``; ``hosts`` maps each node's host name to the ranks it ran."""
    return {
        "git": git_state(),
        "params": params,
        "versions": library_versions(),
        "device": device,
        "world_size": world_size,
        "hosts": hosts,
        "launch_command": launch_command,
    }
