"""Tokenize against what users would run instead: our tokenize stage vs a ``datasets`` map and tiktoken's batch
encoder, 2 workers each, on the same generated corpus.

    python -m bench.tokenize_alternatives [--size-mb 100] [--rounds 3] [--workers 2]

All three turn ``bench/tokenize_throughput.py``'s generated English-like corpus (``--size-mb``) into
uint16 GPT-2 token ids on disk:

* ``ours``: ``nanugpt.data.tokenize.tokenize_files`` (what the tokenize stage runs: train/val token files,
  sha256s, meta.json) with ``--workers`` workers;
* ``datasets``: ``datasets.load_dataset("text", sample_by="paragraph")``, then ``map`` with
  ``num_proc=--workers`` calling tiktoken's gpt2 ``encode_ordinary`` on each paragraph (plus the
  end-of-text id), then the id lists concatenated into a uint16 ``np.memmap`` of the total length:
  the way nanoGPT prepares OpenWebText (our own code; its cache in a temporary folder);
* ``tiktoken``: the corpus read in ``nanugpt.data.tokenize.CHUNK_BYTES`` pieces cut at a line end, each
  piece's paragraphs encoded by ``encode_ordinary_batch(..., num_threads=--workers)`` and appended
  to a uint16 file.

Each contender runs in a fresh process (page cache warm; the timing starts after the imports and
stops when the file is written), in a rotating order per round; the process reports its seconds,
the tokens written, its own peak RSS (VmHWM) and its workers' largest (``ru_maxrss``). The figure is
the median over rounds of (the faster alternative's seconds) / ours. Goal (issue 22): >= 1.2.
Prints tables and writes ``bench/results/tokenize_alternatives.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.tokenize_throughput import MB, Corpus
from nanugpt.data.tokenize import CHUNK_BYTES, tokenize_files
from nanugpt.data.tokenizers.tiktoken import TiktokenOptions, load_encoding

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

CONTENDERS = ("ours", "datasets", "tiktoken")
GOAL = 1.2


def run_ours(corpus: Path, out: Path, workers: int) -> int:
    """The tokenize stage's ``tokenize_files``; the tokens written (train + val)."""
    meta = tokenize_files([corpus], TiktokenOptions(module="tiktoken", encoding="gpt2"), out, 0.1, workers=workers)
    return (meta.train_tokens or 0) + (meta.val_tokens or 0)


def run_datasets(corpus: Path, out: Path, workers: int) -> int:
    """A ``datasets`` map over paragraphs with ``num_proc`` workers, then one uint16 memmap; the tokens written."""
    import datasets

    encoding = load_encoding("gpt2")
    eot = encoding.eot_token

    def encode(row: dict) -> dict:
        ids = encoding.encode_ordinary(row["text"])
        ids.append(eot)
        return {"ids": ids, "len": len(ids)}

    cache = out / "hf-cache"
    ds = datasets.load_dataset("text", data_files=str(corpus), sample_by="paragraph", cache_dir=str(cache))["train"]
    ds = ds.map(encode, remove_columns=["text"], num_proc=workers, desc=None)
    total = int(np.sum(ds["len"]))
    ids = np.memmap(out / "train.bin", dtype=np.uint16, mode="w+", shape=(total,))
    at = 0
    for batch in ds.with_format("numpy", columns=["ids"]).iter(batch_size=4096):
        chunk = np.concatenate(batch["ids"]).astype(np.uint16)
        ids[at : at + len(chunk)] = chunk
        at += len(chunk)
    ids.flush()
    return total


def pieces(corpus: Path) -> Iterator[str]:
    """Yield the corpus in about CHUNK_BYTES pieces cut after a line end, as text."""
    with open(corpus, "rb") as f:
        rest = b""
        while block := f.read(CHUNK_BYTES):
            block = rest + block
            cut = block.rfind(b"\n") + 1 or len(block)
            rest = block[cut:]
            yield block[:cut].decode("utf-8")
        if rest:
            yield rest.decode("utf-8")


def run_tiktoken(corpus: Path, out: Path, workers: int) -> int:
    """tiktoken's ``encode_ordinary_batch`` over each piece's paragraphs with ``num_threads``; the tokens written."""
    encoding = load_encoding("gpt2")
    eot = np.array([encoding.eot_token], dtype=np.uint16)
    total = 0
    with open(out / "train.bin", "wb") as f:
        for text in pieces(corpus):
            paragraphs = [p for p in text.split("\n\n") if p]
            encoded = encoding.encode_ordinary_batch(paragraphs, num_threads=workers)
            chunk = np.concatenate([part for ids in encoded for part in (np.array(ids, dtype=np.uint16), eot)])
            chunk.tofile(f)
            total += len(chunk)
    return total


def run_one(name: str, corpus: Path, out: Path, workers: int) -> None:
    """In a fresh process: run one contender and print its figures as one JSON line."""
    run = {"ours": run_ours, "datasets": run_datasets, "tiktoken": run_tiktoken}[name]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokens = run(corpus, out, workers)
    seconds = time.perf_counter() - start
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "tokens": tokens,
                "main_peak_mb": int(status["VmHWM"].split()[0]) / 1024,
                "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def measure(name: str, corpus: Path, out: Path, workers: int) -> dict[str, float]:
    """One contender's figures, from a fresh process."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    module = "bench.tokenize_alternatives"  # this script, run from the repository root
    command = [sys.executable, "-m", module, "--run-one", name, "--corpus", str(corpus), "--out", str(out)]
    done = subprocess.run([*command, "--workers", str(workers)], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes (ours, datasets) or threads (tiktoken)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the corpus and outputs")
    parser.add_argument("--run-one", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(args.run_one, args.corpus, args.out, args.workers)
        return
    rows = []
    # absolute: the contenders run with the repository root as working directory
    with tempfile.TemporaryDirectory(dir=args.tmp.resolve() if args.tmp else None) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        size = Corpus().write(corpus, int(args.size_mb * MB))
        corpus.read_bytes()  # page cache warm for every contender
        for round_ in range(args.rounds):
            order = CONTENDERS[round_ % 3 :] + CONTENDERS[: round_ % 3]
            figures = {name: measure(name, corpus, Path(tmp) / name, args.workers) for name in order}
            faster = min(figures["datasets"]["seconds"], figures["tiktoken"]["seconds"])
            figures["ratio"] = faster / figures["ours"]["seconds"]
            rows.append(figures)
            print(
                f"round {round_ + 1}: "
                + " | ".join(f"{n} {figures[n]['seconds']:.2f} s ({figures[n]['tokens']:,} tokens)" for n in CONTENDERS)
                + f" | ours / the faster alternative (throughput) {figures['ratio']:.3f}",
                flush=True,
            )
    summary = {
        "size_bytes": size,
        "workers": args.workers,
        "rounds": args.rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "contenders": {
            name: {
                key: statistics.median(r[name][key] for r in rows)
                for key in ("seconds", "tokens", "main_peak_mb", "worker_peak_mb")
            }
            for name in CONTENDERS
        },
        "rows": rows,
    }
    print(
        f"\n{size / MB:.0f} MB corpus, {args.workers} workers/threads, medians of {args.rounds} rounds\n\n"
        "| contender | MB/s | tokens | main peak RSS MB | largest worker peak RSS MB |\n|---|---|---|---|---|"
    )
    for name, c in summary["contenders"].items():
        print(
            f"| {name} | {size / MB / c['seconds']:.2f} | {c['tokens']:,.0f} | {c['main_peak_mb']:.0f} | "
            f"{c['worker_peak_mb']:.0f} |"
        )
    ratio = summary["median_ratio"]
    print(
        "\n| goal | target | measured | result |\n|---|---|---|---|\n"
        f"| ours / the faster alternative (throughput) | >= {GOAL} | {ratio:.3f} | "
        f"{'PASS' if ratio >= GOAL else 'MISS'} |"
    )
    out = BENCH / "results" / "tokenize_alternatives.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
