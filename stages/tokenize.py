"""Tokenize stage: corpus -> ``DATA_ROOT/<dataset>/<tokenizer>/{train,val[,test]}.bin`` + ``meta.json``.

    python -m stages.tokenize [params.yaml] [--section.key value ...]

The corpus is ``data.source``: a URL (downloaded once into
``DATA_ROOT/<dataset>/raw/`` and checked against ``data.sha256``), a text
file, a folder of ``.txt`` files, or ``hf:<name>`` for a Hugging Face
``datasets`` dataset at ``data.hf.revision`` (``data.hf.split``,
``data.hf.text_field``; local files through ``hf:text`` + ``data.hf.data_files``).
Offline, point ``NANUGPT_<DATASET>`` (e.g. ``NANUGPT_TINYSHAKESPEARE``) at a
local copy of a URL source. ``data.test_fraction`` > 0 holds out the corpus's
last share as ``test.bin`` (an hf dataset's own ``data.hf.test_split`` is used
instead when it has one). The pipeline runs it after the source stage, whose
record of the local corpus files (``DATA_ROOT/<dataset>/source.json``) it
depends on. Reads: data.dataset, data.source, data.sha256, data.hf,
data.val_fraction, data.test_fraction, data.tokenize_workers, tokenizer.*.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nanugpt.config.schema import Params
from nanugpt.config.token_meta import TokenMeta
from nanugpt.data.sources import data_record
from nanugpt.files.atomic import write_json
from pipeline import paths
from pipeline.cli import stage_main
from pipeline.console_log import tee_console


def run(params: Params, data_root: Path | None = None) -> TokenMeta:
    """Tokenize the corpus of ``params.data`` with ``params.tokenizer``; return ``meta.json``'s content."""
    root = data_root or paths.data_root()
    out = paths.writable(paths.tokenized_dir(params, root), "DATA_ROOT")
    paths.clean(out.parent)  # the token files of each tokenizer and the downloads (raw/) of the dataset
    meta = params.data.tokenize(params.tokenizer, out, root / params.data.dataset / "raw")
    # after the token files: a tokenize that fails or is killed leaves the record of the files it did not replace
    hashes = paths.source_record(params, root).with_name(".source-hashes.json")  # the source stage's, if it ran
    write_json(paths.tokens_source(params, root), data_record(params.data, hashes=hashes))
    splits = [f"{meta.train_tokens or 0:,} train", f"{meta.val_tokens or 0:,} val"]
    splits += [f"{meta.test_tokens:,} test"] if meta.test_tokens is not None else []
    print(
        f"tokenized {meta.source_bytes:,} bytes into {', '.join(splits[:-1])} and {splits[-1]} tokens "
        f"({meta.dtype}, vocab {meta.vocab_size}) in {out}"
    )
    return meta


def main(argv: list[str] | None = None) -> int:
    with tee_console(paths.log_file("tokenize")):
        return stage_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
