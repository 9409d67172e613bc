"""Source stage: the local corpus files -> ``DATA_ROOT/<dataset>/source.json`` (path, size, sha256 of each).

    python -m stages.source [params.yaml] [--section.key value ...]

The tokenize stage depends on this record, so editing a local corpus (a
``data.source`` file, a file of a ``data.source`` folder, or an hf source's
local ``data.hf.data_files``) re-runs tokenize and what follows, and an
unchanged corpus re-runs nothing. Under DVC the stage runs at every
``dvc repro`` (``always_changed``: DVC cannot depend on a path that only a
params value names); it only hashes, and a file whose size and modification
time are those it was hashed at keeps its hash (``.source-hashes.json`` beside
the record) without being read again. A URL or a hub dataset has no local
files: its params (the URL and ``data.sha256``, or the name and
``data.hf.revision``) are its identity, and tokenize already depends on them.
Reads: data.*.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nanugpt.config.schema import Params
from nanugpt.data.sources import data_record
from nanugpt.files.atomic import write_json
from pipeline import paths
from pipeline.cli import stage_main
from pipeline.console_log import tee_console


def run(params: Params, data_root: Path | None = None) -> dict[str, Any]:
    """Record the sha256 of every local corpus file of ``params.data``; return the record."""
    target = paths.source_record(params, data_root)
    paths.writable(target.parent, "DATA_ROOT")
    record = data_record(params.data, hashes=target.with_name(".source-hashes.json"))
    write_json(target, record)
    print(f"recorded {len(record['files'])} local corpus file(s) in {target}")
    return record


def main(argv: list[str] | None = None) -> int:
    with tee_console(paths.log_file("source")):
        return stage_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
