"""``pipeline.snapshot`` on a temporary git repository: a clean tree, a dirty one (its patch applied and recorded),
the same content twice, no repository; a process started with ``job_env`` imports the snapshot's code, not the
working tree's (nor the editable install's), and records it with ``run_info.code_state``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanugpt.train.run_info import CODE_SNAPSHOT_ENV, code_state
from pipeline.snapshot import SnapshotError, job_env, take, workflow_env

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "nanugpt tests",
    "GIT_AUTHOR_EMAIL": "tests@nanugpt.invalid",
    "GIT_COMMITTER_NAME": "nanugpt tests",
    "GIT_COMMITTER_EMAIL": "tests@nanugpt.invalid",
}
BINARY = bytes(range(256)) * 4


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository with a ``pipeline`` package (the name the editable install maps to this checkout),
    a binary file and a file to delete; ``out/`` (the snapshots' OUT_DIR) inside it, as in a workspace."""
    root = tmp_path / "repo"
    (root / "pipeline").mkdir(parents=True)
    (root / "pipeline" / "__init__.py").write_text("")
    (root / "pipeline" / "where.py").write_text('print("committed", __file__)\n')
    (root / "blob.bin").write_bytes(BINARY)
    (root / "gone.txt").write_text("deleted in the working tree\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "code")
    return root


def test_a_clean_tree_is_its_commit(repo: Path) -> None:
    snapshot = take(repo / "out", context="launch.submit: slurm", project=repo)
    sha = git(repo, "rev-parse", "HEAD").strip()
    assert snapshot.folder == (repo / "out" / ".code" / sha).resolve() and snapshot.patch_sha256 is None
    assert sorted(p.name for p in snapshot.folder.iterdir()) == ["snapshot.json", "tree"]
    assert json.loads((snapshot.folder / "snapshot.json").read_text()) == {
        "sha": sha,
        "dirty": False,
        "patch_sha256": None,
    }
    assert (snapshot.tree / "pipeline" / "where.py").read_text() == 'print("committed", __file__)\n'
    assert (snapshot.tree / "blob.bin").read_bytes() == BINARY
    assert git(repo, "status", "--porcelain") == ""  # the snapshots are ignored by the workspace's git


def test_a_dirty_tree_gets_its_patch_applied_and_recorded(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "pipeline" / "where.py").write_text('print("edited", __file__)\n')
    (repo / "blob.bin").write_bytes(BINARY[::-1])
    (repo / "gone.txt").unlink()
    (repo / "pipeline" / "added.py").write_text("ADDED = 1\n")
    git(repo, "add", "-N", "pipeline/added.py")  # a new module travels once git knows of it
    (repo / "pipeline" / "untracked.py").write_text("")
    snapshot = take(repo / "out", context="launch.submit: slurm", project=repo)

    patch = (snapshot.folder / "uncommitted.patch").read_bytes()
    assert patch == subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=repo, capture_output=True).stdout
    assert snapshot.patch_sha256 == hashlib.sha256(patch).hexdigest()
    sha = git(repo, "rev-parse", "HEAD").strip()
    assert snapshot.folder.name == f"{sha}-{snapshot.patch_sha256[:12]}"
    record = json.loads((snapshot.folder / "snapshot.json").read_text())
    assert record == {"sha": sha, "dirty": True, "patch_sha256": snapshot.patch_sha256}
    tree = snapshot.tree
    assert (tree / "pipeline" / "where.py").read_text() == 'print("edited", __file__)\n'
    assert (tree / "blob.bin").read_bytes() == BINARY[::-1] and (tree / "pipeline" / "added.py").is_file()
    assert not (tree / "gone.txt").exists() and not (tree / "pipeline" / "untracked.py").exists()
    assert "untracked, so not in the code the job runs" in capsys.readouterr().err  # and it says so
    assert code_state({CODE_SNAPSHOT_ENV: str(snapshot.folder)}, code_root=tree) == {
        **record,
        "snapshot": str(snapshot.folder),
    }


def test_the_same_content_twice_is_one_snapshot(repo: Path) -> None:
    first = take(repo / "out", context="launch.submit: slurm", project=repo)
    (first.tree / "marker").write_text("")  # not rebuilt the second time
    assert take(repo / "out", context="launch.submit: slurm", project=repo) == first
    (repo / "blob.bin").write_bytes(b"changed")
    dirty = take(repo / "out", context="launch.submit: slurm", project=repo)
    (repo / "blob.bin").write_bytes(BINARY)  # committed content again: the first snapshot
    assert take(repo / "out", context="launch.submit: slurm", project=repo) == first
    assert sorted(p.name for p in (repo / "out" / ".code").iterdir()) == sorted(
        [".gitignore", first.folder.name, dirty.folder.name]
    )
    assert (first.tree / "marker").exists()


def test_outside_git_it_stops_in_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"^launch.submit: slurm runs each job from a snapshot .*\(git init"):
        take(tmp_path / "out", context="launch.submit: slurm", project=tmp_path)
    assert not (tmp_path / "out").exists()
    assert workflow_env(tmp_path / "out", {}, project=tmp_path) == {}  # a workflow goes on from the working tree


def test_a_job_imports_the_snapshot_not_the_working_tree(repo: Path) -> None:
    snapshot = take(repo / "out", context="launch.submit: slurm", project=repo)
    (repo / "pipeline" / "where.py").write_text('raise RuntimeError("edited after submission")\n')
    env = {**os.environ, **job_env(snapshot, os.environ)}
    # from the working tree, as a job starts: `python -m` would put it first on sys.path, and the editable install
    # maps `pipeline` to this checkout
    done = subprocess.run([sys.executable, "-m", "pipeline.where"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["committed", str(snapshot.tree / "pipeline" / "where.py")]
    assert workflow_env(repo / "out", env, project=repo) == {}  # inside a job the snapshot is set already


def test_a_run_from_the_working_tree_records_its_commit(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD").strip()
    assert code_state({}, code_root=repo) == {"sha": sha, "dirty": False, "patch_sha256": None, "snapshot": None}
    (repo / "blob.bin").write_bytes(b"changed")
    assert code_state({}, code_root=repo)["dirty"] is True
