"""``meta.json``: what the tokenize stage wrote beside the token files, as one typed, self-checked model.

Every data component writes it with ``write_meta`` and every reader gets it from
``read_meta``, which refuses, in one line naming the file and the fix, a file
that is not valid JSON, lacks a key or holds a wrong type, whose ``vocab_size``
differs from the length of its own saved vocabulary, or whose token counts do
not match the sizes of the ``.bin`` files beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nanugpt.errors import UserError
from nanugpt.files.atomic import write_json
from nanugpt.files.checksum import drop_checksum, write_checksum
from nanugpt.files.checksum import problem as checksum_problem

META_FILE = "meta.json"
RETOKENIZE = "re-run the tokenize stage (python -m stages.tokenize)"
ITEMSIZE = {"uint16": 2, "uint32": 4}


class DataError(UserError):
    """Token files that are missing, corrupt, or do not fit the model."""


class TokenMeta(BaseModel):
    """The content of ``meta.json`` (its keys are flat, as the file has them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tokenizer: dict[str, Any] = Field(description="the tokenizer options the files were written with")
    vocab_size: int = Field(ge=1, description="token ids are 0 .. vocab_size - 1")
    dtype: Literal["uint16", "uint32", "streamed"] = Field(description="dtype of the .bin files; 'streamed': none")
    tokenizer_name: str = ""
    vocab: list[str] | None = Field(None, description="the fitted vocabulary by id (char and task tokenizers)")
    eot_id: int | None = None
    source: str = ""
    source_sha256: str | None = None
    source_bytes: int = 0
    revision: str | None = Field(
        None, description="the Hugging Face dataset revision of an hf: source (data.hf.revision)"
    )
    train_tokens: int | None = Field(None, ge=0)
    val_tokens: int | None = Field(None, ge=0)
    test_tokens: int | None = Field(None, ge=0)
    train_sha256: str | None = None
    val_sha256: str | None = None
    test_sha256: str | None = None
    streamed: bool = False
    # Algorithmic tasks (nanugpt.data.tasks): fixed-width rows, the data options they were generated from.
    train_rows: int | None = None
    val_rows: int | None = None
    row_length: int | None = None
    pad_id: int | None = None
    equals_id: int | None = None
    data: dict[str, Any] | None = None
    # Mixtures (nanugpt.data.mixture): the sources, each a subfolder of token files with a meta.json of its own.
    sources: list[str] | None = None

    def split_tokens(self, split: str) -> int | None:
        """The token count of ``split`` (``train``, ``val``, ``test``), or None when not recorded."""
        return {"train": self.train_tokens, "val": self.val_tokens, "test": self.test_tokens}[split]

    def split_sha256(self, split: str) -> str | None:
        """The sha256 of ``split``'s ``.bin`` file, or None when not recorded."""
        return {"train": self.train_sha256, "val": self.val_sha256, "test": self.test_sha256}[split]

    def digest(self) -> str:
        """A sha256 over every field: equal for the same token files (their sha256 and counts are fields)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()

    def problems(self, data_dir: Path) -> list[str]:
        """How this meta disagrees with itself or with the ``.bin`` files in ``data_dir``."""
        problems = []
        if self.vocab is not None and len(self.vocab) != self.vocab_size:
            problems.append(f"vocab_size is {self.vocab_size} but its vocab has {len(self.vocab)} entries")
        for split in ("train", "val", "test"):
            expected, path = self.split_tokens(split), data_dir / f"{split}.bin"
            if self.dtype == "streamed" or expected is None or not path.is_file():
                continue  # a missing split file is reported when it is opened
            size = path.stat().st_size
            if size != expected * ITEMSIZE[self.dtype]:
                problems.append(
                    f"{split}_tokens is {expected} {self.dtype} tokens ({expected * ITEMSIZE[self.dtype]} bytes), "
                    f"but {path.name} has {size} bytes"
                )
        return problems


def tokenizer_fields(options: BaseModel, codec: Any) -> dict[str, Any]:
    """The ``TokenMeta`` fields that describe the tokenizer: its options, and the built codec's name, vocabulary
    size, fitted vocabulary and end-of-text id (every data component writes these the same way)."""
    return {
        "tokenizer": options.model_dump(mode="json"),
        "tokenizer_name": codec.name,
        "vocab_size": codec.vocab_size,
        "vocab": codec.vocab(),
        "eot_id": codec.eot_id,
    }


def write_meta(data_dir: Path, meta: TokenMeta) -> None:
    """Write ``data_dir/meta.json`` atomically (the token files' last step: its presence means they are complete),
    then its checksum (``meta.json.sha256``)."""
    drop_checksum(data_dir / META_FILE)
    write_json(data_dir / META_FILE, meta.model_dump(mode="json", exclude_none=True))
    write_checksum(data_dir / META_FILE)


def drop_meta(data_dir: Path) -> None:
    """Remove ``data_dir/meta.json`` and its checksum, before the token files it describes are replaced."""
    (data_dir / META_FILE).unlink(missing_ok=True)
    drop_checksum(data_dir / META_FILE)


def read_meta(data_dir: Path) -> TokenMeta:
    """The checked ``meta.json`` of ``data_dir``; a ``DataError`` in one line naming the file and the fix otherwise."""
    path = data_dir / META_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: run the tokenize stage first (python -m stages.tokenize)")
    if why := checksum_problem(path, "full"):
        raise DataError(f"{path}: damaged: {why}; {RETOKENIZE}")
    try:
        meta = TokenMeta.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {RETOKENIZE}") from None
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg'][0].lower()}{e['msg'][1:]}"
            + ("" if e["type"] == "missing" else f", got {e['input']!r}")
            for e in exc.errors(include_url=False)
        )
        raise DataError(f"{path}: {details}; {RETOKENIZE}") from None
    if problems := meta.problems(data_dir):
        raise DataError(f"{path}: {'; '.join(problems)}: the files are corrupt or from another run; {RETOKENIZE}")
    return meta
