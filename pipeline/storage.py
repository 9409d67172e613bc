"""The cluster's shared DVC cache in one command, and runs made by Snakemake added to DVC (docs/storage.md).

    python -m pipeline.storage setup --cache DIR [--remote NAME=URL ...] [--group GROUP]
    python -m pipeline.storage import-run OUT_DIR [--name NAME]
    python -m pipeline.storage push-runs [-r REMOTE]

``setup`` points this workspace's DVC cache at ``DIR`` (``.dvc/config.local``: the path is this machine's), with
``cache.type hardlink,symlink`` (workspace files are links into the cache, never copies) and ``cache.shared group``;
``--group`` gives ``DIR`` to a Unix group, setgid, so a team shares it; each ``--remote`` is added to
``.dvc/config`` (commit it: clones push and pull there), the first one the default. Run again, it changes nothing.

``import-run`` adds a finished run folder (``train_summary.json`` and a checkpoint), made anywhere on the
workspace's file system (``snakemake --config out_dir=...``, a sweep's ``OUT_DIR/sweeps/<sweep>/<point>``), to DVC
as ``runs/<NAME>`` (``runs/<NAME>.dvc``, the folder's name by default): its ``checkpoints/``, ``model/`` and ``hf/``
are hard links to the run's files, its other files (logs and tables a resumed run appends to) copies. Commit the
``.dvc`` file and ``dvc push``: a clone's ``dvc pull`` brings the run back.

``push-runs`` is ``dvc push --run-cache`` with the outputs its records name. DVC pushes the records (which stage
run gave which outputs) but only the files of commits and experiments it pushes, never a record's uncached
outputs (metrics and plots kept in git), so a clone cannot replay a stage that wrote one. Pushed with them, a
clone's ``dvc pull --run-cache`` and ``dvc exp run --pull`` (or ``dvc repro --pull``) of a setting already run
restore every stage, train included, instead of running it.
"""

from __future__ import annotations

import argparse
import grp
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from dvc.config import Config, ConfigError
from dvc.exceptions import DvcException, NotDvcRepoError
from dvc.repo import Repo

from nanugpt.errors import UserError
from nanugpt.files.atomic import temporary
from nanugpt.files.folder_lock import hold_out_dir
from pipeline.cli import run_command

# hardlink first: ``dvc add`` puts a file into the cache by a hard link only when the first type is hardlink, and
# copies it otherwise (reflink, else copy: DVC's ``Output.commit``). symlink next: DVC falls back to it per file where
# no hard link can be made (a cache on another file system, EXDEV; another user's object in a group cache, EPERM
# under fs.protected_hardlinks). No reflink: cluster file systems (Lustre, GPFS, NFS) have none, and naming it first
# would make ``dvc add`` copy. No copy: a copy of a multi-GB file is what this setting is for avoiding.
LINK_TYPES = "hardlink,symlink"
RUNS = "runs"  # the workspace folder of imported runs
# A run's big folders, whose files are replaced whole (renamed into place), never written in place: hard links to
# them are safe. Other files (logs, plots, dvclive) may be appended to: copies.
LINKED = ("checkpoints", "model", "hf")
FINISHED_MARKERS = ("train_summary.json", "checkpoints/last.json")  # written by train at its end / at each save


class StorageError(UserError):
    """A DVC cache, remote or run that cannot be set up or imported as asked."""


def workspace(start: Path) -> Path:
    """The root of the DVC repository ``start`` is in, or a one-line error."""
    try:
        return Path(Repo.find_root(str(start)))
    except NotDvcRepoError:
        raise StorageError(
            f"{start.resolve()} is not in a DVC repository: run this in the workspace (git init && dvc init)"
        ) from None


def local_path(text: str) -> Path:
    """A path as typed (``~`` expanded), absolute; symbolic links kept, as the user spelled them."""
    return Path(os.path.abspath(os.path.expanduser(text)))


def parse_remote(text: str) -> tuple[str, str]:
    """``NAME=URL`` as ``(NAME, URL)``; a local path URL made absolute (as ``dvc remote add`` does)."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise StorageError(f"--remote {text}: expected NAME=URL, e.g. shared=/lustre/team/dvc-remote")
    return name, url if "://" in url else str(local_path(url))


@contextmanager
def edited(config: Config, level: str) -> Iterator[dict[str, Any]]:
    """DVC's config file of ``level`` (``local``, ``repo``) to edit in the block, written and validated by DVC."""
    try:
        with config.edit(level) as conf:
            yield conf
    except ConfigError as exc:
        raise StorageError(f"{config.files[level]}: {exc}") from None


def setting(key: str, value: str, old: Any, where: str) -> str:
    """The line that reports one setting: ``key = value  (file)``, ``, unchanged`` where it already was so."""
    old = ",".join(old) if isinstance(old, list) else old
    return f"{key} = {value}  ({where}{', unchanged' if old == value else ''})"


def prepare_cache(folder: Path, group: str | None) -> None:
    """Create the cache folder, give it to ``group`` (setgid: what is created in it stays the group's), and check
    that it can be written; a one-line error naming the folder otherwise."""
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            raise StorageError(f"--group {group}: no such group on this machine") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StorageError(f"--cache {folder}: a file stands where the cache folder should be") from None
    except OSError as exc:
        raise StorageError(f"--cache {folder}: cannot create the cache folder ({exc.strerror})") from None
    if group is not None:
        try:
            shutil.chown(folder, group=group)
            folder.chmod(folder.stat().st_mode | 0o2070)
        except OSError as exc:
            raise StorageError(
                f"--group {group}: cannot give {folder} to the group ({exc.strerror}); be a member of {group} "
                "and the owner of the folder"
            ) from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise StorageError(
            f"--cache {folder}: cannot write the cache there ({exc.strerror}); choose a folder you can write"
        ) from None


def setup(root: Path, *, cache: Path, remotes: Sequence[tuple[str, str]] = (), group: str | None = None) -> list[str]:
    """Point the workspace ``root``'s DVC cache at ``cache`` (links, group-shared) and add ``remotes``, the first
    the default; return a line per setting, saying which were already so."""
    prepare_cache(cache, group)
    config = Config(dvc_dir=str(root / ".dvc"))
    lines = []
    with edited(config, "local") as conf:
        for key, value in (("dir", str(cache)), ("type", LINK_TYPES), ("shared", "group")):
            lines.append(setting(f"cache.{key}", value, conf["cache"].get(key), ".dvc/config.local"))
            conf["cache"][key] = value
    if group is not None:
        lines.append(f"{cache}: group {group}, setgid (what is created in it stays the group's)")
    if remotes:
        with edited(config, "repo") as conf:
            for name, url in remotes:
                remote = conf["remote"].setdefault(name, {})
                lines.append(setting(f"remote.{name}.url", url, remote.get("url"), ".dvc/config"))
                remote["url"] = url  # the remote's other options (dvc remote modify) are kept
            default = remotes[0][0]
            lines.append(setting("core.remote", default, conf["core"].get("remote"), ".dvc/config"))
            conf["core"]["remote"] = default
        lines.append("commit .dvc/config: a clone then pushes to and pulls from these remotes")
    same = cache.stat().st_dev == root.stat().st_dev
    lines.append(
        "links: hard links (the cache is on the workspace's file system)"
        if same
        else "links: symbolic links (the cache is on another file system: dvc add copies a file into it once)"
    )
    return lines


@dataclass(frozen=True)
class Imported:
    """A run placed in the workspace: its folder (relative to the workspace once imported), the files hard-linked
    to the run's (and the bytes they hold, each file once), and the files copied."""

    folder: Path
    linked: int
    linked_bytes: int
    copied: int


def check_finished(out: Path) -> None:
    """Refuse a folder that is not a finished run: no ``train_summary.json`` or no checkpoint."""
    if not out.is_dir():
        raise StorageError(f"{out}: no such run folder")
    for marker in FINISHED_MARKERS:
        if not (out / marker).is_file():
            raise StorageError(
                f"{out}: not a finished run, {marker} is missing (train writes train_summary.json at its end and "
                "checkpoints/last.json with each checkpoint); import it once its train has finished"
            )


def run_folder(root: Path, out: Path, name: str) -> Path:
    """``root/runs/<name>``, where the run ``out`` is imported; refused where ``name`` is not a plain relative
    path, the folder is taken, or it would be inside the run (or the run inside ``runs/``)."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(part in (".", "..") or part.startswith(".") for part in parts):
        raise StorageError(f"--name {name}: expected a relative path of plain names (e.g. lr_width/lr=0.001)")
    target = root / RUNS / Path(*parts)
    if target.exists() or target.is_symlink() or target.with_name(f"{target.name}.dvc").exists():
        raise StorageError(f"{target}: already there; choose another --name, or remove it first (dvc remove)")
    if target.is_relative_to(out) or out.is_relative_to(root / RUNS):
        raise StorageError(f"{out}: the run and {RUNS}/{name} would overlap; import a run folder from elsewhere")
    return target


def check_no_copy(root: Path, out: Path) -> None:
    """Refuse an import that would copy the run's checkpoints: a cache type that is not hardlink first, or the run,
    the workspace and the cache not on one file system (hard links cannot cross file systems)."""
    config = Config(dvc_dir=str(root / ".dvc"))
    types = config["cache"].get("type") or ["reflink", "copy"]  # DVC's default
    if types[0] != "hardlink":
        raise StorageError(
            f"cache.type is {','.join(types)}: dvc add would copy the run's checkpoints into the cache; run "
            f"python -m pipeline.storage setup --cache DIR first (cache.type {LINK_TYPES})"
        )
    cache = Path(config["cache"].get("dir") or root / ".dvc" / "cache")
    while not cache.exists():  # DVC creates it on the first add
        cache = cache.parent
    for place, path in (("the workspace", root), ("the DVC cache", cache)):
        if path.stat().st_dev != out.stat().st_dev:
            raise StorageError(
                f"{out} is on another file system than {place} ({path}): hard links cannot cross file systems and "
                "import-run never copies checkpoints; put the workspace (a clone) and the cache on the run's file "
                "system"
            )


def mirror(out: Path, folder: Path) -> Imported:
    """Build ``folder`` as the run ``out``: the files of ``LINKED`` folders hard-linked, the others copied, symbolic
    links as they are; hidden names (locks, temporaries, ``.previous-run``, ``.code``) left out."""
    counts = {"linked": 0, "bytes": 0, "copied": 0}
    inodes: set[int] = set()  # last.pt is a hard link to a step file: its bytes count once

    def place(src: str, dst: str) -> None:
        if Path(src).relative_to(out).parts[0] in LINKED:
            os.link(src, dst)
            counts["linked"] += 1
            info = os.stat(dst)
            counts["bytes"] += 0 if info.st_ino in inodes else info.st_size
            inodes.add(info.st_ino)
        else:
            shutil.copy2(src, dst)
            counts["copied"] += 1

    def hidden(_: str, names: list[str]) -> list[str]:
        return [name for name in names if name.startswith(".")]

    try:
        shutil.copytree(out, folder, symlinks=True, ignore=hidden, copy_function=place)
    except shutil.Error as exc:
        src, _, why = exc.args[0][0]
        raise StorageError(
            f"{src}: cannot place it in {folder} ({why}); a file of another user can be hard-linked only by its "
            "owner (fs.protected_hardlinks): import the run as the owner of its files"
        ) from None
    return Imported(folder=folder, linked=counts["linked"], linked_bytes=counts["bytes"], copied=counts["copied"])


def import_run(root: Path, out_dir: Path, *, name: str | None = None) -> Imported:
    """Add the finished run ``out_dir`` to the workspace ``root``'s DVC as ``runs/<name>`` (``dvc add``), with no
    copy of its checkpoints; return what was placed. The run folder is held (no train writes into it meanwhile)."""
    out = out_dir.resolve()
    check_finished(out)
    target = run_folder(root, out, out.name if name is None else name)
    check_no_copy(root, out)
    tmp = temporary(target)
    try:
        with hold_out_dir(out, "import-run"):
            target.parent.mkdir(parents=True, exist_ok=True)
            imported = mirror(out, tmp)
            os.replace(tmp, target)
    except OSError as exc:
        raise StorageError(f"{out}: cannot import the run ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    relative = target.relative_to(root)
    print(f"dvc add {relative} (it hashes every file once)", flush=True)
    try:
        added = subprocess.run([sys.executable, "-m", "dvc", "add", "-q", str(relative)], cwd=root, check=False)
        if added.returncode != 0:
            raise StorageError(f"dvc add {relative} failed (its message above); nothing was imported")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return replace(imported, folder=relative)


@dataclass(frozen=True)
class PushedRuns:
    """What ``push_runs`` sent: run records, files of their outputs that the remote lacked, and files it could not
    send (missing in the local cache)."""

    records: int
    files: int
    failed: int


def push_runs(root: Path, *, remote: str | None = None) -> PushedRuns:
    """Push the run-cache of the workspace ``root`` to ``remote`` (the default remote when None): its records, as
    ``dvc push --run-cache`` does, and every output file they name that the local cache holds."""
    with Repo(str(root)) as repo:
        runs = Path(repo.stage_cache.cache_dir)
        records = sorted((entry.parent.name, entry.name) for entry in runs.glob("*/*/*") if entry.is_file())
        try:
            repo.stage_cache.push(remote)
            used = repo.stage_cache.get_used_objs(records)
            pushed = repo.cloud.push({obj for objs in used.values() for obj in objs}, remote=remote)
        except DvcException as exc:
            message = " ".join(str(exc).split())  # DVC's advice comes on lines of its own
            raise StorageError(f"push-runs to {remote or 'the default remote'}: {message}") from None
    return PushedRuns(records=len(records), files=len(pushed.transferred), failed=len(pushed.failed))


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line usage errors (exit 2)."""

    def error(self, message: str) -> Any:
        print(f"error: {self.prog}: {message} (-h for help)", file=sys.stderr)
        raise SystemExit(2)


def parser() -> Parser:
    """The command line of the module doc."""
    top = Parser(
        prog="python -m pipeline.storage",
        description=(__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True)
    setup_command = commands.add_parser("setup", help="the DVC cache on shared storage, as links; remotes")
    setup_command.add_argument("--cache", required=True, help="the cache folder (on the cluster's shared storage)")
    setup_command.add_argument(
        "--remote", action="append", default=[], metavar="NAME=URL", help="a DVC remote, repeatable; first: default"
    )
    setup_command.add_argument("--group", help="the Unix group that shares the cache folder")
    import_command = commands.add_parser("import-run", help="a finished run folder into DVC as runs/NAME")
    import_command.add_argument("out_dir", metavar="OUT_DIR", help="the run's folder")
    import_command.add_argument("--name", help="runs/NAME in the workspace (default: the run folder's name)")
    push_command = commands.add_parser("push-runs", help="dvc push --run-cache, with the outputs its records name")
    push_command.add_argument("-r", "--remote", help="the DVC remote (default: the default remote)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``setup``, ``import-run`` or ``push-runs`` (see the module doc) in the DVC workspace of the working
    directory."""
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2

    def body() -> None:
        root = workspace(Path.cwd())
        if args.command == "setup":
            remotes = [parse_remote(text) for text in args.remote]
            print("\n".join(setup(root, cache=local_path(args.cache), remotes=remotes, group=args.group)))
            return
        if args.command == "push-runs":
            pushed, where = push_runs(root, remote=args.remote), args.remote or "the default remote"
            if pushed.failed:
                raise StorageError(
                    f"pushed {pushed.records} run records to {where}, but {pushed.failed} files of their outputs are "
                    "not in the local cache (removed by dvc gc?): a clone runs those stages again"
                )
            print(f"pushed {pushed.records} run records and {pushed.files} files of their outputs to {where}")
            return
        imported = import_run(root, Path(args.out_dir), name=args.name)
        folder = imported.folder
        files = [str(folder.with_name(f"{folder.name}.dvc")), str(folder.parent / ".gitignore")]
        print(
            f"imported {args.out_dir} as {folder}: {imported.linked} files hard-linked ({imported.linked_bytes:,} "
            f"bytes, no copy), {imported.copied} copied\n"
            f"next: git add {shlex.join(files)} && git commit -m {shlex.quote(f'run {folder}')} && dvc push"
        )

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
