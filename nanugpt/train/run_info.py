"""``run_info.json``: what is needed to reproduce a run, and no secrets.

Holds the code the run used (its git commit, whether uncommitted changes were in
it and, for a Slurm job, the snapshot it ran from), the resolved params, library
versions, device, world size and the launch command. The process environment is
never recorded.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "numpy", "pydantic", "tiktoken", "dvc", "snakemake")
# The code snapshot a Slurm job runs from (``pipeline.snapshot``): its folder, and the record in it of what it holds.
CODE_SNAPSHOT_ENV = "NANUGPT_CODE_SNAPSHOT"
SNAPSHOT_RECORD = "snapshot.json"
CODE_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or snapshot) whose code this process runs


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


def code_state(env: Mapping[str, str] = os.environ, code_root: Path = CODE_ROOT) -> dict[str, Any]:
    """The code this process runs: ``sha`` (None outside git), ``dirty`` (uncommitted changes to tracked files),
    ``patch_sha256`` (of those changes, as applied to a snapshot) and ``snapshot`` (the folder a job's code was
    copied to at submission; None for a run from the working tree, whose patch is not kept)."""
    folder = env.get(CODE_SNAPSHOT_ENV)
    if folder and code_root.is_relative_to(Path(folder).resolve()):
        return {**json.loads((Path(folder) / SNAPSHOT_RECORD).read_text()), "snapshot": folder}
    git = git_state(code_root)
    return {"sha": git["commit"], "dirty": git["dirty"], "patch_sha256": None, "snapshot": None}


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
        "code": code_state(),
        "params": params,
        "versions": library_versions(),
        "device": device,
        "world_size": world_size,
        "hosts": hosts,
        "launch_command": launch_command,
    }
