"""Where a corpus comes from: a URL checked against its sha256, local text files, or a Hugging Face dataset at
a revision; and the record of the local files' sha256 that the source stage writes (``source_record``).

Offline machines: for a URL source the fetcher first takes a local copy from
the environment variable ``NANUGPT_<DATASET>`` (e.g. ``NANUGPT_TINYSHAKESPEARE``)
or from a file already downloaded into ``DATA_ROOT/<dataset>/raw/``; it only
downloads when neither exists, and it checks the sha256 whatever the origin.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from nanugpt.config.schema import tokens_settings
from nanugpt.data.generated import GENERATED_PREFIX, generated_corpus
from nanugpt.errors import UserError
from nanugpt.files.atomic import write_json
from nanugpt.files.download import DownloadFailed, download_once, file_name
from nanugpt.files.hashing import check_sha256, sha256_file


class SourceError(UserError):
    """A corpus that cannot be found, downloaded or verified."""


def local_copy_env(dataset: str) -> str:
    """The environment variable that may point at a local copy of ``dataset``."""
    return "NANUGPT_" + "".join(c if c.isalnum() else "_" for c in dataset).upper()


HF_PREFIX = "hf:"
Documents = Callable[[], Iterable[list[str]]]  # a function that yields a split's texts in order, in lists


def load_hf_documents(
    source: str,
    split: str,
    text_field: str,
    *,
    config: str | None = None,
    data_files: list[str] | dict[str, list[str]] | None = None,
    revision: str | None = None,
    test_split: str | None = None,
    val_split: str | None = None,
) -> tuple[tuple[Documents, int], tuple[Documents, int] | None, tuple[Documents, int] | None]:
    """Open a Hugging Face ``datasets`` dataset (``source`` is ``hf:<name>``) at ``revision``: its ``split`` as
    (batches of texts, count), its ``test_split`` the same way when the dataset has one (else None), and its
    ``val_split``, which it must have when named (else None).

    The dataset is downloaded once into the datasets cache (or read from local
    ``data_files``) and memory-mapped, so memory stays flat.
    """
    try:
        import datasets
    except ImportError:
        raise SourceError("data.source hf:... needs the datasets package: pip install 'nanugpt[hf]'") from None
    name = source[len(HF_PREFIX) :]
    try:
        splits = datasets.load_dataset(name, config, data_files=data_files, revision=revision)
    except Exception as exc:  # datasets raises many types: missing, offline, bad revision
        raise SourceError(
            f"data.source {source!r}: cannot load it at revision {revision or 'main'!r} ({type(exc).__name__}: "
            f"{exc}). Offline, load it once with network, or give local files in data.hf.data_files"
        ) from None
    for key, name in (("split", split), ("val_split", val_split)):
        if name is not None and name not in splits:
            raise SourceError(f"data.hf.{key} {name!r} is not a split of {source} ({sorted(splits)})")

    def documents(dataset: Any) -> tuple[Documents, int]:
        if text_field not in dataset.column_names:
            raise SourceError(f"data.hf.text_field {text_field!r} is not a column of {source} ({dataset.column_names})")

        def batches() -> Iterator[list[str]]:
            for batch in dataset.iter(batch_size=1024):
                yield batch[text_field]

        return batches, len(dataset)

    test = documents(splits[test_split]) if test_split and test_split != split and test_split in splits else None
    val = documents(splits[val_split]) if val_split is not None else None
    return documents(splits[split]), test, val


def corpus_files(source: str, data_files: list[str] | dict[str, list[str]] | None = None) -> list[Path]:
    """The local files a corpus is read from: a ``data.source`` file, the ``.txt`` files of a folder, or an
    hf source's local ``data_files``; none for a URL, a hub dataset or a generated corpus, whose identity is its
    params (and, for a generated one, the code)."""
    if source.startswith(HF_PREFIX):
        listed = data_files.values() if isinstance(data_files, dict) else [data_files or []]
        return [Path(name).expanduser() for names in listed for name in names]
    if source.startswith(("http://", "https://", GENERATED_PREFIX)):
        return []
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise SourceError(f"data.source {source!r}: folder holds no .txt files")
        return files
    if not path.is_file():
        raise SourceError(f"data.source {source!r}: no such file or folder")
    return [path]


def data_corpus_files(data: Any) -> list[Path]:
    """The local files a ``data:`` component is read from: what its optional ``corpus_files()`` method returns
    (``tokenized`` has one); none for a component without it, whose data its params identify (generated
    tasks, a streamed hub dataset)."""
    corpus = getattr(data, "corpus_files", None)
    return corpus() if corpus is not None else []


def source_record(files: list[Path], hashes: Path | None = None) -> dict[str, Any]:
    """What the source stage writes: each local corpus file's path, size and sha256, so that a pipeline that
    depends on the record re-runs exactly when a file's content changed. ``hashes``: the file that keeps the
    hashes between runs (``known_hashes``), so an unchanged large corpus is not read again at each run."""
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise SourceError(f"data: corpus files not found: {', '.join(missing)}")
    digests = known_hashes(files, hashes) if hashes is not None else [sha256_file(p) for p in files]
    return {"files": [{"path": str(p), "bytes": p.stat().st_size, "sha256": d} for p, d in zip(files, digests)]}


def data_record(data: Any, hashes: Path | None = None) -> dict[str, Any]:
    """``source_record`` of a ``data:`` component's local files, with the options its token files depend on
    (``tokens_settings``): what the tokenize stage depends on."""
    return {"settings": tokens_settings(data), **source_record(data_corpus_files(data), hashes=hashes)}


def changed_files(recorded: dict[str, Any], made_from: dict[str, Any]) -> list[str]:
    """The corpus files whose content differs between two ``source_record``s (added, removed or edited)."""
    now = {entry["path"]: entry["sha256"] for entry in recorded.get("files", [])}
    then = {entry["path"]: entry["sha256"] for entry in made_from.get("files", [])}
    return sorted(path for path in now.keys() | then.keys() if now.get(path) != then.get(path))


def files_digest(files: list[Path]) -> str | None:
    """One sha256 of the files' contents, in order (of their sha256); None for no files."""
    if not files:
        return None
    return hashlib.sha256("\n".join(entry["sha256"] for entry in source_record(files)["files"]).encode()).hexdigest()


# A file changed less than this before its hash was kept may change again within the clock's resolution
# without its modification time moving (git's "racily clean" entries): its kept hash is not trusted.
RACY_NS = 2_000_000_000


def read_kept_hashes(kept: Path) -> tuple[int, dict[str, tuple[int, int, str]]]:
    """``known_hashes``'s file: when it was written and its entries; a missing or damaged file (or entry) is
    nothing kept, so those hashes are computed again and the file rewritten whole."""
    try:
        data = json.loads(kept.read_bytes())
        written_ns, files = data["written_ns"], data["files"]
        if not isinstance(written_ns, int) or not isinstance(files, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return 0, {}
    entries = {}
    for path, entry in files.items():
        if (
            isinstance(entry, list)
            and len(entry) == 3
            and all(isinstance(v, t) for v, t in zip(entry, (int, int, str)))
        ):
            entries[path] = (entry[0], entry[1], entry[2])
    return written_ns, entries


def known_hashes(files: list[Path], kept: Path) -> list[str]:
    """The sha256 of each file, read from ``kept`` (path -> size, modification time, sha256; rewritten here)
    where the size and modification time are those it was hashed at, and the file had not changed just before."""
    written_ns, previous = read_kept_hashes(kept)
    digests, entries = [], {}
    for path in files:
        stat = path.stat()
        size, mtime, digest = previous.get(str(path), (None, None, None))
        settled = stat.st_mtime_ns < written_ns - RACY_NS
        if not (size == stat.st_size and mtime == stat.st_mtime_ns and settled):
            digest = sha256_file(path)
        digests.append(digest)
        entries[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
    write_json(kept, {"written_ns": time.time_ns(), "files": entries})
    return digests


def resolve_source(source: str, dataset: str, sha256: str | None, raw_dir: Path) -> list[Path]:
    """Return the local text files of a corpus, downloading a URL source if needed."""
    if source.startswith(("http://", "https://")):
        return [_fetch_url(source, dataset, sha256, raw_dir)]
    if source.startswith(GENERATED_PREFIX):
        return generated_corpus(source, raw_dir)
    files = corpus_files(source)
    if Path(source).expanduser().is_file():
        _pinned(sha256)(files[0], "data.source")
    return files


def _pinned(sha256: str | None) -> Callable[[Path, str], None]:
    """The check of a corpus file against ``data.sha256``."""
    return functools.partial(check_sha256, expected=sha256, key="data.sha256", error=SourceError)


def _fetch_url(url: str, dataset: str, sha256: str | None, raw_dir: Path) -> Path:
    env_name = local_copy_env(dataset)
    if env_path := os.environ.get(env_name):
        copy = Path(env_path).expanduser()
        if not copy.is_file():
            raise SourceError(f"{env_name}={env_path}: no such file")
        _pinned(sha256)(copy, env_name)
        return copy
    target = raw_dir / file_name(url)
    try:
        return download_once(url, target, _pinned(sha256), timeout_s=30)
    except DownloadFailed as exc:
        raise SourceError(
            f"{exc}. Without network, set {env_name}=/path/to/a/local/copy or put the file at {target}"
        ) from None
