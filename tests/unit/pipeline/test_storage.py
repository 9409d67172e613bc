"""``pipeline.storage`` without ``dvc add``: the command line's one-line errors, ``setup`` on a real ``dvc init``
workspace (what it writes, run twice, ``--group``, a cache that cannot be written, no repository), ``import-run``'s
refusals (an unfinished run, a bad or taken name, a copying cache type, another file system, a run in use), the
folder it builds (checkpoints hard-linked, logs copied, hidden files left out), and ``push-runs`` against a local
remote (a clone replays a stage from it, not from ``dvc push --run-cache`` alone). tests/e2e/test_storage_e2e.py runs
both commands with the real ``dvc``."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dvc.config import Config
from helpers import call_main, dvc_env, lock_folder, unlock_folder

from nanugpt.files.folder_lock import FolderInUseError, hold_out_dir
from pipeline import storage
from pipeline.storage import LINK_TYPES, StorageError, import_run, mirror, parse_remote, setup


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace made by ``dvc init --no-scm``, copied by each test that needs one."""
    root = tmp_path_factory.mktemp("dvc-init") / "ws"
    root.mkdir()
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=dvc_env(root.parent), check=True, timeout=60)
    return root


@pytest.fixture
def ws(tmp_path: Path, initialized: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DVC workspace in ``tmp_path``, the working directory, with no user or system DVC config."""
    for name, value in dvc_env(tmp_path).items():
        if name.startswith("DVC_"):
            monkeypatch.setenv(name, value)
    root = shutil.copytree(initialized, tmp_path / "ws")
    monkeypatch.chdir(root)
    return root


def finished_run(folder: Path) -> Path:
    """A run folder as train leaves it, the files' contents aside: a checkpoint, ``last.json``, the summary, logs and
    plots (appended to), an export, and the hidden files of a run's machinery."""
    for name in ("checkpoints/step-0000004.pt", "checkpoints/last.json", "train_summary.json", "run_info.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    os.link(folder / "checkpoints/step-0000004.pt", folder / "checkpoints/last.pt")
    for name in ("logs/train.log", "plots/train.csv", "hf/model.safetensors", ".previous-run/train_summary.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    (folder / ".lock").touch()
    os.symlink("step-0000004.pt", folder / "checkpoints/newest")
    return folder


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return finished_run(tmp_path / "scratch" / "sweeps" / "lr" / "lr=0.001")


def test_usage_errors_are_one_line_and_exit_2() -> None:
    for args, expected in (
        ([], "the following arguments are required: command"),
        (["setup"], "the following arguments are required: --cache"),
        (["import-run"], "the following arguments are required: OUT_DIR"),
        (["push"], "invalid choice: 'push'"),
    ):
        code, out, err = call_main(storage.main, args)
        assert code == 2 and out == "", args
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err


def test_outside_a_dvc_repository_both_commands_refuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["setup", "--cache", str(tmp_path / "cache")], ["import-run", str(tmp_path)]):
        code, _, err = call_main(storage.main, args)
        assert code == 1
        assert (
            err == f"error: {tmp_path} is not in a DVC repository: run this in the workspace (git init && dvc init)\n"
        )
    assert not (tmp_path / "cache").exists()


def test_remote_arguments() -> None:
    assert parse_remote("shared=/lustre/team/remote") == ("shared", "/lustre/team/remote")
    assert parse_remote("cluster=ssh://login1/srv/dvc") == ("cluster", "ssh://login1/srv/dvc")
    assert parse_remote("rel=remote") == ("rel", str(Path.cwd() / "remote"))  # as dvc remote add takes it
    for bad in ("shared", "=/x", "shared="):
        with pytest.raises(StorageError, match=f"--remote {bad}: expected NAME=URL"):
            parse_remote(bad)


def test_setup_writes_the_cache_here_and_the_remotes_for_clones(ws: Path, tmp_path: Path) -> None:
    cache = tmp_path / "shared" / "cache"
    lines = setup(ws, cache=cache, remotes=[("shared", "/srv/remote"), ("cluster", "ssh://login1/srv/dvc")])
    local, repo = Config(dvc_dir=str(ws / ".dvc")).load_one("local"), Config(dvc_dir=str(ws / ".dvc")).load_one("repo")
    assert local["cache"] == {"dir": str(cache), "type": LINK_TYPES, "shared": "group"}
    assert repo["remote"] == {"shared": {"url": "/srv/remote"}, "cluster": {"url": "ssh://login1/srv/dvc"}}
    assert repo["core"]["remote"] == "shared"  # the first remote is the default
    assert "cache" not in (ws / ".dvc" / "config").read_text()  # the cache path is this machine's, not a clone's
    assert cache.is_dir()
    assert lines[:3] == [
        f"cache.dir = {cache}  (.dvc/config.local)",
        f"cache.type = {LINK_TYPES}  (.dvc/config.local)",
        "cache.shared = group  (.dvc/config.local)",
    ]
    assert lines[-1] == "links: hard links (the cache is on the workspace's file system)"


def test_setup_run_again_changes_nothing_and_keeps_a_remote_s_own_options(ws: Path, tmp_path: Path) -> None:
    remotes = [("shared", "/srv/remote")]
    setup(ws, cache=tmp_path / "cache", remotes=remotes)
    with Config(dvc_dir=str(ws / ".dvc")).edit("repo") as conf:  # as dvc remote modify shared jobs 2 writes it
        conf["remote"]["shared"]["jobs"] = "2"
    files = {name: (ws / ".dvc" / name).read_text() for name in ("config", "config.local")}
    again = setup(ws, cache=tmp_path / "cache", remotes=remotes)
    assert {name: (ws / ".dvc" / name).read_text() for name in files} == files
    settings = [line for line in again if " = " in line]
    assert len(settings) == 5 and all(line.endswith(", unchanged)") for line in settings), again


def test_setup_gives_the_cache_to_a_group_setgid(ws: Path, tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name  # a group this process may give its folder to
    lines = setup(ws, cache=tmp_path / "cache", group=group)
    mode = (tmp_path / "cache").stat()
    assert mode.st_gid == os.getgid() and mode.st_mode & stat.S_ISGID and mode.st_mode & 0o070 == 0o070
    assert f"{tmp_path / 'cache'}: group {group}, setgid (what is created in it stays the group's)" in lines
    with pytest.raises(StorageError, match="^--group nanugpt-no-such-group: no such group on this machine$"):
        setup(ws, cache=tmp_path / "other", group="nanugpt-no-such-group")
    assert not (tmp_path / "other").exists()


def test_setup_refuses_a_cache_it_cannot_write(ws: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    lock_folder(locked)
    try:
        with pytest.raises(StorageError, match=f"^--cache {locked}: cannot write the cache there"):
            setup(ws, cache=locked, remotes=[("shared", "/srv/remote")])
        with pytest.raises(StorageError, match=f"^--cache {locked / 'cache'}: cannot create the cache folder"):
            setup(ws, cache=locked / "cache")
    finally:
        unlock_folder(locked)
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="a file stands where the cache folder should be"):
        setup(ws, cache=tmp_path / "file")
    assert not (ws / ".dvc" / "config.local").exists()  # nothing set


def test_import_refuses_an_unfinished_run(ws: Path, run_dir: Path) -> None:
    setup(ws, cache=ws.parent / "cache")
    with pytest.raises(StorageError, match="no such run folder"):
        import_run(ws, run_dir / "missing")
    (run_dir / "checkpoints" / "last.json").unlink()
    with pytest.raises(StorageError, match="not a finished run, checkpoints/last.json is missing"):
        import_run(ws, run_dir)
    (run_dir / "train_summary.json").unlink()
    with pytest.raises(StorageError, match="not a finished run, train_summary.json is missing"):
        import_run(ws, run_dir)
    assert not (ws / "runs").exists()


def test_import_refuses_a_bad_or_taken_name(ws: Path, run_dir: Path) -> None:
    setup(ws, cache=ws.parent / "cache")
    for bad in ("../x", "/abs", "a/../b", ".hidden", "a/.b", ""):
        with pytest.raises(StorageError, match="expected a relative path of plain names"):
            import_run(ws, run_dir, name=bad)
    (ws / "runs" / "lr").mkdir(parents=True)
    (ws / "runs" / "lr" / "taken.dvc").write_text("")
    with pytest.raises(StorageError, match="runs/lr/taken: already there; choose another --name"):
        import_run(ws, run_dir, name="lr/taken")
    with pytest.raises(StorageError, match="would overlap"):
        import_run(ws, finished_run(ws / "runs" / "inside"), name="copy")


def test_import_refuses_a_cache_type_that_would_copy(ws: Path, run_dir: Path) -> None:
    with pytest.raises(StorageError, match=r"^cache.type is reflink,copy: dvc add would copy the run's checkpoints"):
        import_run(ws, run_dir)
    with Config(dvc_dir=str(ws / ".dvc")).edit("local") as conf:
        conf["cache"]["type"] = "symlink,hardlink"
    with pytest.raises(StorageError, match=r"^cache.type is symlink,hardlink: .* setup --cache DIR first"):
        import_run(ws, run_dir)
    assert not (ws / "runs").exists()


@pytest.fixture
def other_file_system(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system than ``tmp_path`` (/dev/shm, a tmpfs), or skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no /dev/shm on another file system here")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


def test_import_refuses_a_run_on_another_file_system(ws: Path, other_file_system: Path) -> None:
    setup(ws, cache=ws.parent / "cache")
    with pytest.raises(StorageError, match=f"on another file system than the workspace \\({ws}\\): hard links"):
        import_run(ws, finished_run(other_file_system / "run"))
    setup(ws, cache=other_file_system / "cache")
    with pytest.raises(StorageError, match=f"on another file system than the DVC cache \\({other_file_system}"):
        import_run(ws, finished_run(ws.parent / "run"))


def test_import_refuses_a_run_a_train_is_writing(ws: Path, run_dir: Path) -> None:
    setup(ws, cache=ws.parent / "cache")
    with hold_out_dir(run_dir, "train"), pytest.raises(FolderInUseError, match="import-run cannot run beside it"):
        import_run(ws, run_dir)
    assert not (ws / "runs").exists()


def test_the_imported_folder_links_checkpoints_and_copies_the_rest(run_dir: Path, tmp_path: Path) -> None:
    imported = mirror(run_dir, tmp_path / "imported")
    names = sorted(str(p.relative_to(imported.folder)) for p in imported.folder.rglob("*") if not p.is_dir())
    assert names == [
        "checkpoints/last.json",
        "checkpoints/last.pt",
        "checkpoints/newest",
        "checkpoints/step-0000004.pt",
        "hf/model.safetensors",
        "logs/train.log",
        "plots/train.csv",
        "run_info.json",
        "train_summary.json",
    ]  # no .lock, no .previous-run
    for name in names:
        original, placed = run_dir / name, imported.folder / name
        assert placed.read_bytes() == original.read_bytes(), name
        if placed.is_symlink():
            assert os.readlink(placed) == "step-0000004.pt"
        else:  # the big folders' files are the run's own (no copy); the others, appended to by a resumed run, copies
            assert os.path.samefile(placed, original) == name.startswith(("checkpoints/", "hf/")), name
    assert (imported.linked, imported.copied) == (4, 4)
    step, last_json, export = "checkpoints/step-0000004.pt", "checkpoints/last.json", "hf/model.safetensors"
    assert imported.linked_bytes == len(step) + len(last_json) + len(export)  # last.pt is the step file: once


STAGE = {
    "stages": {
        "make": {
            "cmd": "python -c \"import json, pathlib; pathlib.Path('model.txt').write_text('weights'); "
            "pathlib.Path('metrics.json').write_text(json.dumps({'loss': 1.5}))\"",
            "deps": ["input.txt"],
            "outs": ["model.txt"],
            "metrics": [{"metrics.json": {"cache": False}}],
        }
    }
}


def dvc(args: list[str], root: Path) -> str:
    """A ``dvc`` command in ``root``; its output."""
    done = subprocess.run(
        ["dvc", *args], cwd=root, env=dvc_env(root.parent), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def clone_of(ws: Path, initialized: Path, folder: Path) -> Path:
    """Another workspace with ``ws``'s stage, input and remote, and none of its cache or outputs."""
    clone = shutil.copytree(initialized, folder)
    for name in ("dvc.yaml", "input.txt", ".dvc/config"):
        shutil.copy(ws / name, clone / name)
    return clone


def test_push_runs_sends_what_a_clone_needs_to_replay_a_stage_with_an_uncached_metric(
    ws: Path, initialized: Path, tmp_path: Path
) -> None:
    import yaml

    (ws / "dvc.yaml").write_text(yaml.safe_dump(STAGE))
    (ws / "input.txt").write_text("data")
    dvc(["remote", "add", "-d", "shared", str(tmp_path / "remote")], ws)
    assert "Running stage 'make'" in dvc(["repro"], ws)

    dvc(["push", "--run-cache"], ws)  # DVC's own: the run record, not the metric's content
    records_only = clone_of(ws, initialized, tmp_path / "records-only")
    dvc(["fetch", "--run-cache"], records_only)
    assert "Running stage 'make'" in dvc(["repro", "--pull"], records_only)

    code, out, err = call_main(storage.main, ["push-runs"])
    assert code == 0, err
    assert out.strip() == "pushed 1 run records and 1 files of their outputs to the default remote"  # metrics.json
    clone = clone_of(ws, initialized, tmp_path / "clone")
    dvc(["fetch", "--run-cache"], clone)
    assert "Stage 'make' is cached - skipping run, checking out outputs" in dvc(["repro", "--pull"], clone)
    assert (clone / "model.txt").read_text() == "weights" and (clone / "metrics.json").read_text() == '{"loss": 1.5}'


def test_push_runs_without_a_remote_says_so(ws: Path) -> None:
    code, _, err = call_main(storage.main, ["push-runs"])
    assert code == 1 and err.count("\n") == 1 and "push-runs to the default remote" in err, err
