"""End-to-end, with the real ``dvc``: the cluster's shared cache set up by ``python -m pipeline.storage setup``, and a
run made outside DVC added by ``python -m pipeline.storage import-run`` (docs/storage.md).

A module fixture sets up one shared cache for workspace A and adds a 2 GiB token file (sparse: no block is written
unless something copies it) there, measuring ``du`` (real blocks and apparent size) and the time; then a clone B set
up on the same cache checks it out. The tests read what it measured: the file is one inode under three names (A's,
B's, the cache's), and nothing grew. Then, in A, a stage that writes its output in place, run by ``dvc repro``,
leaves the cached copies intact; and a run of a real tiny training, imported into a workspace of its own on the
same cache, pushed to a local remote and pulled by a fresh clone, comes back byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import REPO, TINY_TEXT, dvc_env, one_process, run, tiny_params

from nanugpt.files.hashing import sha256_file

pytestmark = pytest.mark.slow

TOKEN_FILE = "data/big/char/train.bin"  # a DATA_ROOT-like folder: <dataset>/<tokenizer>/train.bin
TOKEN_BYTES = 2 * 1024**3
METADATA_BYTES = 1024**2  # what folders, .dvc files and DVC's own files may add: far below a copy


@dataclass(frozen=True)
class Usage:
    """What ``du`` counts for some folders together (a file hard-linked from several of them once): the bytes of
    the blocks on disk, and of the files' sizes."""

    real: int
    apparent: int


def usage(*folders: Path) -> Usage:
    def total(*options: str) -> int:
        du = ["du", "-s", "-c", "--block-size=1", *options, *map(str, folders)]
        return int(subprocess.run(du, capture_output=True, text=True, check=True).stdout.splitlines()[-1].split()[0])

    return Usage(real=total(), apparent=total("--apparent-size"))


@dataclass
class Shared:
    """The shared cache, workspaces A and B on it, and what the fixture measured."""

    env: dict[str, str]
    cache: Path
    a: Path
    b: Path
    add_s: float
    checkout_s: float
    before: dict[str, Usage]
    after_add: dict[str, Usage]
    after_b: Usage


def storage(ws: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "pipeline.storage", *args], ws, env)


def new_workspace(ws: Path, env: dict[str, str]) -> Path:
    ws.mkdir()
    run(["git", "init", "-q"], ws, env)
    run(["dvc", "init", "-q"], ws, env)
    return ws


def commit(ws: Path, env: dict[str, str], message: str) -> None:
    run(["git", "add", "-A"], ws, env)
    run(["git", "commit", "-q", "-m", message], ws, env)


def cached(cache: Path, md5: str) -> Path:
    """The cache's object of ``md5``."""
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """``setup`` a shared cache in A, add the 2 GiB token file, commit; clone A as B, ``setup`` B on the same cache,
    ``dvc checkout``; ``du`` before and after each, and the time of the add and of the checkout."""
    tmp = tmp_path_factory.mktemp("storage")
    env = {**dvc_env(tmp), "PYTHONPATH": str(REPO)}
    cache = tmp / "cache"
    a = new_workspace(tmp / "a", env)
    storage(a, env, "setup", "--cache", str(cache))
    (a / TOKEN_FILE).parent.mkdir(parents=True)
    (a / TOKEN_FILE).touch()
    os.truncate(a / TOKEN_FILE, TOKEN_BYTES)
    before = {"cache": usage(cache), "workspace": usage(a), "both": usage(cache, a)}
    start = time.perf_counter()
    run(["dvc", "add", "-q", TOKEN_FILE], a, env)
    add_s = time.perf_counter() - start
    after_add = {"cache": usage(cache), "workspace": usage(a), "both": usage(cache, a)}
    commit(a, env, "a token file")

    b = tmp / "b"
    run(["git", "clone", "-q", str(a), str(b)], tmp, env)
    storage(b, env, "setup", "--cache", str(cache))  # the cache path is each workspace's own (.dvc/config.local)
    start = time.perf_counter()
    run(["dvc", "checkout", "-q"], b, env)
    checkout_s = time.perf_counter() - start
    return Shared(env, cache, a, b, add_s, checkout_s, before, after_add, after_b=usage(cache, a, b))


def test_a_2gib_token_file_goes_into_the_shared_cache_as_a_link_not_a_copy(shared: Shared) -> None:
    md5 = yaml.safe_load((shared.a / f"{TOKEN_FILE}.dvc").read_text())["outs"][0]["md5"]
    stored, token_file = cached(shared.cache, md5), shared.a / TOKEN_FILE
    assert stored.stat().st_size == TOKEN_BYTES
    assert os.path.samefile(stored, token_file) and not token_file.is_symlink()  # one file, two names: a hard link
    before, after = shared.before, shared.after_add
    print(
        f"\ndvc add of {TOKEN_BYTES:,} bytes (sparse): {shared.add_s:.1f} s; du real / apparent bytes, before -> "
        f"after: cache {before['cache'].real:,} / {before['cache'].apparent:,} -> {after['cache'].real:,} / "
        f"{after['cache'].apparent:,}; workspace {before['workspace'].real:,} / {before['workspace'].apparent:,} -> "
        f"{after['workspace'].real:,} / {after['workspace'].apparent:,}; both {before['both'].real:,} / "
        f"{before['both'].apparent:,} -> {after['both'].real:,} / {after['both'].apparent:,}"
    )
    assert after["cache"].apparent - before["cache"].apparent >= TOKEN_BYTES  # the cache holds the file...
    assert after["both"].apparent - before["both"].apparent < METADATA_BYTES  # ...and the workspace's is that one
    assert after["both"].real - before["both"].real < METADATA_BYTES  # no block written: a copy writes 2 GiB


def test_a_clone_on_the_same_cache_sees_the_same_file_with_no_copy(shared: Shared) -> None:
    assert os.path.samefile(shared.b / TOKEN_FILE, shared.a / TOKEN_FILE)
    print(f"\ndvc checkout in B: {shared.checkout_s:.1f} s; du of cache + A + B: {shared.after_b}")
    assert shared.after_b.apparent - shared.after_add["both"].apparent < METADATA_BYTES
    assert shared.after_b.real - shared.after_add["both"].real < METADATA_BYTES
    assert "up to date" in run(["dvc", "status"], shared.b, shared.env).stdout


STAGES = {
    "stages": {
        # each command appends a line to its output, in place: through a link it would write into the cache
        "rewrite": {"cmd": "python -c \"open('rewritten.txt', 'a').write('rewrite\\n')\"", "outs": ["rewritten.txt"]},
        "append": {
            "cmd": "python -c \"open('appended.txt', 'a').write('append\\n')\"",
            "outs": [{"appended.txt": {"persist": True}}],
        },
    }
}


def test_a_stage_writing_its_linked_output_leaves_the_cached_copy_intact(shared: Shared) -> None:
    env, ws = shared.env, shared.a
    (ws / "dvc.yaml").write_text(yaml.safe_dump(STAGES, sort_keys=False))
    run(["dvc", "repro", "-q"], ws, env)
    first = {name: cached(shared.cache, md5_of(ws / name)) for name in ("rewritten.txt", "appended.txt")}
    for name, stored in first.items():
        assert os.path.samefile(ws / name, stored), name  # an in-place write would reach the cache

    run(["dvc", "repro", "-q", "--force"], ws, env)
    # DVC removed the plain output before its command ran, and replaced the persistent one (kept so that a stage can
    # continue it, as train does its checkpoints) by a copy (what dvc unprotect does): the appends went to files of
    # their own
    assert (ws / "rewritten.txt").read_text() == "rewrite\n"
    assert (ws / "appended.txt").read_text() == "append\nappend\n"
    assert not os.path.samefile(ws / "appended.txt", first["appended.txt"])
    for name, stored in first.items():
        assert md5_of(stored) == stored.parent.name + stored.name, name  # the object still has its address's content
    assert first["appended.txt"].read_text() == "append\n"
    assert "up to date" in run(["dvc", "status"], ws, env).stdout


def test_an_imported_run_is_pushed_and_pulled_byte_for_byte(shared: Shared) -> None:
    env, tmp = shared.env, shared.a.parent
    (tmp / "corpus.txt").write_text(TINY_TEXT)
    params = tiny_params(tmp / "corpus.txt", training={"max_steps": 4, "checkpoint_every": 2}, eval={"eval_every": 0})
    (tmp / "scratch").mkdir()
    one_process(tmp / "scratch", params, "run")  # a Snakemake run's folder, outside any workspace
    out = tmp / "scratch" / "run"
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))

    ws = new_workspace(tmp / "lab", env)
    storage(ws, env, "setup", "--cache", str(shared.cache), "--remote", f"shared={tmp / 'remote'}")
    imported = storage(ws, env, "import-run", str(out), "--name", "lr_width/lr=0.003")
    assert "imported" in imported.stdout and "no copy" in imported.stdout
    folder = ws / "runs" / "lr_width" / "lr=0.003"
    run_inodes = {(out / name).stat().st_ino for name in files}
    for name in files:  # the checkpoints are the run's own files (best.pt may be last.pt's: DVC keeps one file per
        # content), the rest copies (a resumed run appends to them)
        assert ((folder / name).stat().st_ino in run_inodes) == (name.parts[0] in ("checkpoints", "model")), name
    commit(ws, env, "a run from Snakemake")
    run(["dvc", "push", "-q"], ws, env)

    clone = tmp / "laptop"
    run(["git", "clone", "-q", str(ws), str(clone)], tmp, env)
    run(["dvc", "pull", "-q"], clone, env)  # its own cache (.dvc/cache), from the remote of .dvc/config
    pulled = clone / "runs" / "lr_width" / "lr=0.003"
    assert sorted(p.relative_to(pulled) for p in pulled.rglob("*") if p.is_file()) == files
    assert {str(n): sha256_file(pulled / n) for n in files} == {str(n): sha256_file(out / n) for n in files}
    assert "checkpoints/last.pt" in {str(n) for n in files}
