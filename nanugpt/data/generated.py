"""Text corpora the repository writes itself, offline and the same on every machine: ``data.source: gen:<name>``.

A generated corpus is a folder of documents (one ``.txt`` file each), written
again at every tokenize from a fixed seed, so it is a pure function of the
code: a source that needs no download and no file beside the repository (the
mixture preset's second source, tests of document packing).

- ``gen:arithmetic``: 2,000 worksheets of 4 to 40 additions, subtractions and
  multiplications with their answers (about 0.3 MB).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

from nanugpt.errors import UserError

GENERATED_PREFIX = "gen:"


def arithmetic_documents(count: int = 2000, seed: int = 0) -> list[str]:
    """``count`` worksheets of arithmetic problems with their answers, drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    operations: list[tuple[str, Callable[[int, int], int]]] = [
        ("+", lambda a, b: a + b),
        ("-", lambda a, b: a - b),
        ("*", lambda a, b: a * b),
    ]
    documents = []
    for number in range(1, count + 1):
        lines = [f"Worksheet {number}"]
        for _ in range(rng.randint(4, 40)):
            symbol, apply = rng.choice(operations)
            a, b = rng.randint(0, 999), rng.randint(0, 99 if symbol == "*" else 999)
            lines.append(f"{a} {symbol} {b} = {apply(a, b)}")
        documents.append("\n".join(lines) + "\n")
    return documents


GENERATORS: dict[str, Callable[[], list[str]]] = {"arithmetic": arithmetic_documents}


def generated_corpus(source: str, raw_dir: Path) -> list[Path]:
    """Write the documents of ``source`` (``gen:<name>``) into ``raw_dir/generated-<name>/``, one file each, and
    return the files in order. The folder is replaced whole, so it never mixes two versions of a generator."""
    name = source[len(GENERATED_PREFIX) :]
    generator = GENERATORS.get(name)
    if generator is None:
        raise UserError(f"data.source {source!r}: no such generated corpus; known: {', '.join(sorted(GENERATORS))}")
    folder = raw_dir / f"generated-{name}"
    staging = raw_dir / f".generated-{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    documents = generator()
    width = len(str(len(documents)))
    for number, text in enumerate(documents, 1):
        (staging / f"doc-{number:0{width}d}.txt").write_text(text, encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return sorted(folder.glob("*.txt"))
