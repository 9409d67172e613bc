"""The code a Slurm job runs: a snapshot of the repository taken when the job was submitted.

A job may wait in the queue for hours; meanwhile the working tree changes. So at submission (``launch.submit:
slurm``, or the Snakemake Slurm profile at the start of a workflow) the code of the repository this process runs
from is copied, once per content, to ``OUT_DIR/.code/<key>/``:

* ``tree/``: the HEAD commit (``git archive``) with the uncommitted changes to tracked files applied;
* ``uncommitted.patch``: those changes (``git diff HEAD --binary``), when there are any;
* ``snapshot.json``: ``sha``, ``dirty`` and ``patch_sha256``, which the run copies into ``run_info.json``.

``<key>`` is the commit's sha, plus ``-`` and the patch's sha256 (12 digits) when the tree is dirty: the same
code submitted twice is one snapshot. Untracked files are not part of a snapshot (``git add`` a new module, or
``git add -N`` it, to take it along). The job runs in the submission's working directory, so every relative path
(params file, ``DATA_ROOT``, ``OUT_DIR``, ``data.source``) means what it meant there, and imports from the
snapshot: ``PYTHONPATH`` names the snapshot's tree first and ``PYTHONSAFEPATH`` keeps the working directory off
``sys.path`` (Python >= 3.11), ahead of the editable install's finder. Snapshots are kept (a queued job needs its
own); ``rm -rf OUT_DIR/.code`` clears them when no job is queued.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nanugpt.errors import UserError
from nanugpt.train.run_info import CODE_ROOT, CODE_SNAPSHOT_ENV, SNAPSHOT_RECORD

SNAPSHOTS = ".code"  # the folder of snapshots under OUT_DIR
PACKAGES = ("nanugpt", "pipeline", "stages")  # where an untracked Python file is code a job would miss
GIT_TIMEOUT_S = 120


class SnapshotError(UserError):
    """The code cannot be snapshotted: not in a git work tree, no git, or a patch that does not apply."""


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of the code under ``OUT_DIR/.code``: its folder, commit and the sha256 of its uncommitted patch."""

    folder: Path
    sha: str
    patch_sha256: str | None

    @property
    def tree(self) -> Path:
        """The folder that holds the code (what ``PYTHONPATH`` names)."""
        return self.folder / "tree"

    def describe(self) -> str:
        """``<sha>`` or ``<sha> + uncommitted changes (patch sha256 <12 digits>)``, for a console line."""
        if self.patch_sha256 is None:
            return self.sha
        return f"{self.sha} + uncommitted changes (patch sha256 {self.patch_sha256[:12]})"


def git(
    args: Sequence[str], cwd: Path, context: str, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """``git args`` in ``cwd``; a SnapshotError naming ``context`` when git is missing, or fails and ``check``."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise SnapshotError(f"{context} snapshots the code with git, which is not on PATH: install git") from None
    if check and done.returncode:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise SnapshotError(f"{context}: git {args[0]} failed in {cwd}: {message[-1] if message else 'no output'}")
    return done


def head_commit(project: Path, context: str) -> str:
    """The sha of ``project``'s HEAD; a SnapshotError naming ``context`` outside a git repository with a commit."""
    done = git(["rev-parse", "--verify", "HEAD"], project, context, check=False)
    if done.returncode:
        raise SnapshotError(
            f"{context} runs each job from a snapshot of the code's git commit, but {project} is not in a git "
            "repository with a commit: make it one (git init, git add, git commit)"
        )
    return done.stdout.decode().strip()


def take(out_dir: Path, context: str, project: Path = CODE_ROOT) -> Snapshot:
    """Snapshot the code of ``project`` (HEAD plus its uncommitted changes to tracked files) under
    ``out_dir/.code``, or return the snapshot of the same content taken before. ``context`` names what asked
    for it (``launch.submit: slurm``) in errors. Warns, on stderr, of untracked Python files of the packages."""
    sha = head_commit(project, context)
    # --relative: the project's folder only, paths relative to it; fixed prefixes and no diff drivers whatever the
    # user's git config says, so that `git apply` reads it back
    patch = git(
        ["diff", "HEAD", "--binary", "--relative", "--no-ext-diff", "--no-textconv", "--no-color",
         "--src-prefix=a/", "--dst-prefix=b/"],
        project,
        context,
    ).stdout  # fmt: skip
    patch_sha256 = hashlib.sha256(patch).hexdigest() if patch else None
    key = sha if patch_sha256 is None else f"{sha}-{patch_sha256[:12]}"
    root = out_dir / SNAPSHOTS
    snapshot = Snapshot(folder=(root / key).resolve(), sha=sha, patch_sha256=patch_sha256)
    warn_untracked(project, context)
    if (snapshot.folder / SNAPSHOT_RECORD).is_file():
        return snapshot
    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text("*\n")  # never part of the workspace's git status, ruff or DVC's view
    building = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    try:
        extract(sha, project, building / "tree", context)
        if patch:
            (building / "uncommitted.patch").write_bytes(patch)
            apply(building / "uncommitted.patch", building / "tree", context)
        record = {"sha": sha, "dirty": bool(patch), "patch_sha256": patch_sha256}
        (building / SNAPSHOT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        try:
            building.rename(snapshot.folder)  # complete, or not there at all
        except OSError:
            if not (snapshot.folder / SNAPSHOT_RECORD).is_file():  # not another submission's same snapshot
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return snapshot


def extract(sha: str, project: Path, tree: Path, context: str) -> None:
    """Write commit ``sha`` of ``project`` (its folder only) into ``tree``."""
    tree.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", sha], cwd=project, stdout=subprocess.PIPE)
    assert archive.stdout is not None
    unpacked = subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, capture_output=True, check=False)
    archive.stdout.close()
    if archive.wait() or unpacked.returncode:
        raise SnapshotError(f"{context}: git archive {sha} | tar -x failed: {unpacked.stderr.decode().strip()}")


def apply(patch: Path, tree: Path, context: str) -> None:
    """Apply ``patch`` (``git diff --binary``) to the files of ``tree``."""
    # the tree lies inside OUT_DIR, maybe inside the workspace's repository: `git apply` must not find that
    # repository (it would take the patch's paths from its top), so the search for one stops above the tree
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.resolve().parent)}
    git(["apply", "--whitespace=nowarn", str(patch.resolve())], tree, context, env=env)


def warn_untracked(project: Path, context: str) -> None:
    """Name, on stderr, the untracked Python files of the packages: a snapshot has only tracked files."""
    listed = git(["ls-files", "--others", "--exclude-standard", "-z", "--", *PACKAGES], project, context).stdout
    untracked = [name for name in listed.decode().split("\0") if name.endswith(".py")]
    if untracked:
        print(
            f"snapshot: untracked, so not in the code the job runs (git add them to include them): "
            f"{', '.join(untracked)}",
            file=sys.stderr,
            flush=True,
        )


def job_env(snapshot: Snapshot, env: Mapping[str, str]) -> dict[str, str]:
    """The variables that make a job started with ``env`` import the snapshot's code: ``PYTHONPATH`` (the
    snapshot's tree first), ``PYTHONSAFEPATH`` (the working directory off ``sys.path``) and the snapshot's folder,
    which the run records in ``run_info.json``."""
    if sys.version_info < (3, 11):
        raise SnapshotError(
            "running a job from a code snapshot needs Python 3.11 or newer (PYTHONSAFEPATH keeps the working "
            f"directory off sys.path); this is Python {sys.version.split()[0]}"
        )
    python_path = os.pathsep.join(filter(None, [str(snapshot.tree), env.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": python_path, "PYTHONSAFEPATH": "1", CODE_SNAPSHOT_ENV: str(snapshot.folder)}


def workflow_env(out_dir: Path | str, env: Mapping[str, str], project: Path = CODE_ROOT) -> dict[str, str]:
    """For the Snakefile, when a workflow's jobs run on Slurm: the variables (``job_env``) that make every job
    run the code as it is now, from a snapshot under ``out_dir``. Nothing inside a job (the variables are already
    set), and nothing, with a warning, outside a git work tree: the jobs then run the working tree's code."""
    if CODE_SNAPSHOT_ENV in env:
        return {}
    try:
        snapshot = take(Path(out_dir), context="the Slurm profile", project=project)
    except SnapshotError as exc:
        print(f"snapshot: {exc}; the jobs run the working tree's code as it is when each starts", file=sys.stderr)
        return {}
    print(f"snapshot: the jobs run the code of {snapshot.describe()}, copied to {snapshot.tree}", file=sys.stderr)
    return job_env(snapshot, env)
