"""Tokenize throughput and memory: our tokenizer pipeline against a bare ``encode_ordinary`` loop, same run.

    python -m bench.tokenize_throughput [--size-mb 100] [--rounds 5] [--memory-sizes-mb 10,100,1000]
                                        [--memory-tokenizers gpt2,byte]

The benchmark writes its own corpus: English-like pseudo-words (a fixed list
of common English words plus syllable-built words, Zipf-distributed) with
commas, full stops, newlines and blank lines, generated deterministically from
a seed. It is ASCII, so any byte offset is a character boundary.

Throughput. Each round times, in a rotating order, on the same ``--size-mb``
corpus (page cache warm):

* ``bare``: a loop that reads the file in ``nanugpt.data.tokenize.CHUNK_BYTES``
  chunks and calls tiktoken's gpt2 ``encode_ordinary`` on each, nothing else;
* ``ours-1``: ``nanugpt.data.tokenize.tokenize_files`` with the ``tiktoken`` gpt2
  options and ``workers=1`` (splits, token files, sha256s, meta.json);
* ``ours-2``: the same with ``workers=2``;
* ``bare-2``: the bare loop over a 2-process pool, the ceiling for ``ours-2``
  on this machine at this moment.

Figures are medians over rounds of per-round ratios of throughput (wall
time), so noise that hits a whole round cancels. Each contender also records
its CPU seconds (this process and its pool workers) and how much CPU other
processes used while it ran (``others vCPU``, from /proc/stat minus our own
CPU time). For the 1-process pair the ratio of CPU times is also printed: it
is what the wall-time ratio would be on a quiet machine. Rounds in which other
processes used less than 0.25 vCPU during every contender are "quiet" and get
their own medians.

Memory. One fresh subprocess per measurement runs ``tokenize_files`` on a
10 MB, 100 MB and 1 GB corpus (default workers: all cores) and reports the
peak RSS of its main process (VmHWM: its own ``ru_maxrss`` would include this
benchmark's RSS, which Linux carries over fork + exec), the largest
``ru_maxrss`` of its pool workers, and the peak PSS of the main process and
its workers together, sampled every 50 ms (PSS splits shared pages among
their users, so the sum is the memory held at once). A subprocess that only
imports the same modules and builds the tokenizer gives the floor. The gpt2
and the byte tokenizer are both measured by default. The goal (1 GB within
1.2x of 10 MB) is checked, for each tokenizer, on the sum of exact peaks
(main + workers x largest worker: no sampling, shared pages counted once per
process); the main-only and PSS ratios are printed beside it.

Prints Markdown tables and the issue's goals with PASS/MISS, and writes JSON to
``bench/results/tokenize_throughput.json``. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nanugpt.data.tokenize import CHUNK_BYTES, tokenize_files
from nanugpt.data.tokenizers.tiktoken import TiktokenOptions, load_encoding

REPO = Path(__file__).resolve().parent.parent

MB = 1_000_000
GOAL_ONE_WORKER = 0.9  # ours-1 / bare
GOAL_TWO_WORKERS = 1.5  # ours-2 / ours-1
GOAL_MEMORY = 1.2  # peak at 1 GB / peak at 10 MB
QUIET_VCPU = 0.25  # a round is quiet when other processes used less than this during each contender

# ---------------------------------------------------------------- the corpus

COMMON_WORDS = (
    "the of and to a in is it that was he for on are as with his they at be this from have or by one had not "
    "but what all were when we there can an your which their said if do will each about how up out them then "
    "she many some so these would other into has more her two like him see time could no make than first been "
    "its who now people my made over did down only way find use may water long little very after words called "
    "just where most know get through back much before go good new write our used me man too any day same right "
    "look think also around another came come work three word must because does part even place well such here "
    "take why things help put years different away again off went old number great tell men say small every "
    "found still between name should home big give air line set own under read last never us left end along "
    "while might next sound below saw something thought both few those always looked show large often together "
    "asked house world going want school important until form food keep children feet land side without boy "
    "once animals life enough took sometimes four head above kind began almost live page got earth need far "
    "hand high year mother light parts country father let night following picture being study second eyes soon"
).split()
ONSETS = [
    "",
    "",
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "y",
    "bl",
    "br",
    "ch",
    "cl",
    "cr",
    "dr",
    "fl",
    "fr",
    "gl",
    "gr",
    "pl",
    "pr",
    "sh",
    "sl",
    "sp",
    "st",
    "th",
    "tr",
    "wh",
]
NUCLEI = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "ee", "ie", "oa", "oo", "ou"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "d", "m", "ng", "st", "nd", "rt", "ck", "ll", "nt", "th"]
SUFFIXES = ["", "", "", "", "s", "ed", "ing", "er", "ly", "ion", "ness"]
# separator after a word, with its probability: mostly spaces, some punctuation, a line end every ~14 words
SEPARATORS = [(" ", 0.835), (", ", 0.06), (". ", 0.03), (".\n", 0.035), ("\n", 0.035), (".\n\n", 0.005)]
N_INVENTED = 12_000
BLOCK_WORDS = 1 << 20


class Corpus:
    """A deterministic generator of English-like text (a word table, Zipf frequencies, separators)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng([seed, 0])
        invented: list[str] = []
        seen = set(COMMON_WORDS)
        while len(invented) < N_INVENTED:
            syllables = rng.choice([1, 2, 2, 3, 3, 4])
            word = "".join(
                ONSETS[rng.integers(len(ONSETS))] + NUCLEI[rng.integers(len(NUCLEI))] + CODAS[rng.integers(len(CODAS))]
                for _ in range(syllables)
            )
            word += SUFFIXES[rng.integers(len(SUFFIXES))]
            if word not in seen:
                seen.add(word)
                invented.append(word)
        words = COMMON_WORDS + invented
        ranks = np.arange(len(words))
        self.word_p = 1.0 / (ranks + 2.7)
        self.word_p /= self.word_p.sum()
        self.sep_p = np.array([p for _, p in SEPARATORS])
        self.sep_p /= self.sep_p.sum()
        entries = [(w + s).encode("ascii") for w in words for s, _ in SEPARATORS]
        self.table = np.frombuffer(b"".join(entries), dtype=np.uint8)
        self.lengths = np.array([len(e) for e in entries], dtype=np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.seed = seed

    def block(self, index: int) -> bytes:
        """Block ``index`` of the text stream (about 6.5 MB), the same bytes on every call."""
        rng = np.random.default_rng([self.seed, 1, index])
        word = rng.choice(len(self.word_p), size=BLOCK_WORDS, p=self.word_p)
        sep = rng.choice(len(self.sep_p), size=BLOCK_WORDS, p=self.sep_p)
        entry = word * len(SEPARATORS) + sep
        lengths = self.lengths[entry]
        ends = np.cumsum(lengths)
        source = np.repeat(self.starts[entry] - (ends - lengths), lengths) + np.arange(ends[-1])
        return self.table[source].tobytes()

    def write(self, path: Path, n_bytes: int) -> int:
        """Write the first ``n_bytes`` of the stream (cut back to a line end) to ``path``; return its size."""
        written, index = 0, 0
        with open(path, "wb") as f:
            while written < n_bytes:
                data = self.block(index)
                index += 1
                if written + len(data) >= n_bytes:
                    data = data[: data.rfind(b"\n", 0, n_bytes - written) + 1]
                f.write(data)
                written += len(data)
                if not data:
                    break
        return written


# ---------------------------------------------------------------- machine load


def _busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class LoadMeter:
    """CPU used by other processes while a block of code runs, in vCPUs (0.5 = half a core on average)."""

    def __enter__(self) -> LoadMeter:
        self.wall, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.wall
        self.own_cpu_seconds = _own_seconds() - self.own  # this process and its reaped children
        others = (_busy_seconds() - self.busy) - self.own_cpu_seconds
        self.others_vcpu = max(0.0, others / self.seconds)


# ---------------------------------------------------------------- the contenders

_encoding = None


def _bare_init() -> None:
    global _encoding
    _encoding = load_encoding("gpt2")


def _bare_encode(block: bytes) -> int:
    return len(_encoding.encode_ordinary(block.decode("utf-8")))


def _chunks(path: Path):
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            yield block


def bare(path: Path, workers: int) -> int:
    """The reference: read in CHUNK_BYTES chunks, encode_ordinary each; returns the token count."""
    if workers == 1:
        return sum(_bare_encode(block) for block in _chunks(path))
    with multiprocessing.get_context("fork").Pool(workers, initializer=_bare_init) as pool:
        return sum(pool.imap(_bare_encode, _chunks(path), chunksize=1))


def ours(path: Path, out_dir: Path, workers: int) -> int:
    """``tokenize_files`` with the tiktoken gpt2 options; returns the token count (train + val)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = tokenize_files([path], TiktokenOptions(module="tiktoken", encoding="gpt2"), out_dir, 0.1, workers=workers)
    shutil.rmtree(out_dir)
    return (meta.train_tokens or 0) + (meta.val_tokens or 0)


# ---------------------------------------------------------------- memory, one subprocess per measurement

MEMORY_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from nanugpt.data.tokenize import tokenize_files
from nanugpt.data.tokenizers.byte import ByteTokenizerOptions
from nanugpt.data.tokenizers.tiktoken import TiktokenOptions
corpus, tokenizer, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
options = (TiktokenOptions(module="tiktoken", encoding="gpt2") if tokenizer == "gpt2"
           else ByteTokenizerOptions(module="byte"))
options.build()  # the floor measurement stops here
start = time.perf_counter()
if corpus != "-":
    out.mkdir(parents=True, exist_ok=True)
    tokenize_files([Path(corpus)], options, out, 0.1)
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"seconds": seconds, "main_hwm_kb": int(status["VmHWM"].split()[0]),
                  "workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def _pss_kb(pid: int) -> int:
    """Proportional set size of one process (shared pages split among their users), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_memory(corpus: Path | None, tokenizer: str, out_dir: Path) -> dict[str, float]:
    """Peak memory (MB) of a fresh process tokenizing ``corpus`` (None: imports and tokenizer only).

    ``main_mb`` is the child's own VmHWM (not ``ru_maxrss``: Linux carries the
    parent's high-water mark over fork + exec into a child's ``ru_maxrss``),
    ``worker_mb`` the largest ``ru_maxrss`` of its pool workers (pages shared
    with the main process included), and ``tree_pss_mb`` the largest sum of PSS
    over the child and its workers, sampled every 50 ms: the memory the whole
    tokenize actually held at once.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", MEMORY_CHILD, str(corpus) if corpus else "-", tokenizer, str(out_dir)],
        cwd=REPO,  # python -c puts the working directory on its path: nanugpt imports from the repository root
        stdout=subprocess.PIPE,
        text=True,
    )
    tree_pss = 0
    while proc.poll() is None:
        tree_pss = max(tree_pss, sum(_pss_kb(p) for p in _descendants(proc.pid)))
        time.sleep(0.05)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"the memory child failed ({proc.returncode}): {stdout}")
    shutil.rmtree(out_dir, ignore_errors=True)
    child = json.loads(stdout.strip().splitlines()[-1])
    return {
        "seconds": child["seconds"],
        "main_mb": child["main_hwm_kb"] / 1024,
        "worker_mb": child["workers_kb"] / 1024,
        "tree_pss_mb": tree_pss / 1024,
    }


# ---------------------------------------------------------------- main


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100, help="throughput corpus size (MB)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the four contenders")
    parser.add_argument("--memory-sizes-mb", default="10,100,1000", help="corpus sizes for peak memory; '' skips")
    parser.add_argument("--memory-tokenizers", default="gpt2,byte", help="tokenizers for peak memory (gpt2, byte)")
    parser.add_argument("--tmp", default=None, help="folder for the corpora (default: the system temp folder)")
    args = parser.parse_args()
    memory_sizes = [float(x) for x in args.memory_sizes_mb.split(",") if x.strip()]
    memory_tokenizers = [x.strip() for x in args.memory_tokenizers.split(",") if x.strip()]

    _bare_init()
    corpus = Corpus(seed=0)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        path = tmp / "corpus.txt"
        size = corpus.write(path, int(args.size_mb * MB))
        print(
            f"corpus: {size / MB:.1f} MB in {time.perf_counter() - start:.1f} s; sample: {path.read_bytes()[:120]!r}",
            flush=True,
        )

        # ------------------------------------------------ throughput, interleaved
        contenders = {
            "bare": lambda: bare(path, 1),
            "ours-1": lambda: ours(path, tmp / "out", 1),
            "ours-2": lambda: ours(path, tmp / "out", 2),
            "bare-2": lambda: bare(path, 2),
        }
        names = list(contenders)
        contenders["bare"]()  # warm the page cache and tiktoken's caches
        rounds = []
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            row: dict[str, float] = {}
            for name in order:
                with LoadMeter() as meter:
                    row[f"{name}_tokens"] = contenders[name]()
                row[f"{name}_mb_per_s"] = size / MB / meter.seconds
                row[f"{name}_cpu_s"] = meter.own_cpu_seconds
                row[f"{name}_others_vcpu"] = meter.others_vcpu
            row["others_vcpu"] = max(row[f"{n}_others_vcpu"] for n in names)
            row["ours1_over_bare"] = row["ours-1_mb_per_s"] / row["bare_mb_per_s"]
            row["ours1_over_bare_cpu"] = row["bare_cpu_s"] / row["ours-1_cpu_s"]
            row["ours2_over_ours1"] = row["ours-2_mb_per_s"] / row["ours-1_mb_per_s"]
            row["bare2_over_bare"] = row["bare-2_mb_per_s"] / row["bare_mb_per_s"]
            row["ours2_over_bare2"] = row["ours-2_mb_per_s"] / row["bare-2_mb_per_s"]
            # what ours-2 / ours-1 would be with two idle cores and no waiting: its CPU work spread over both
            row["ours2_over_ours1_cpu_bound"] = 2 * row["ours-1_cpu_s"] / row["ours-2_cpu_s"]
            rounds.append(row)
            print(
                f"round {r + 1}: "
                + " | ".join(f"{n} {row[f'{n}_mb_per_s']:.2f} MB/s" for n in names)
                + f" | ours-1/bare {row['ours1_over_bare']:.3f} (CPU time {row['ours1_over_bare_cpu']:.3f})"
                + f" | ours-2/ours-1 {row['ours2_over_ours1']:.3f} | bare-2/bare {row['bare2_over_bare']:.3f}"
                + f" | others up to {row['others_vcpu']:.2f} vCPU",
                flush=True,
            )
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        quiet = [r for r in rounds if r["others_vcpu"] < QUIET_VCPU]
        med_quiet = {key: statistics.median(r[key] for r in quiet) for key in quiet[0]} if quiet else None
        tokens_match = len({r[f"{n}_tokens"] for r in rounds for n in ("ours-1", "ours-2")}) == 1

        # ------------------------------------------------ peak memory, a subprocess each
        memory = []
        if memory_sizes:
            big = tmp / "memory.txt"
            for tokenizer in memory_tokenizers:
                floor = peak_memory(None, tokenizer, tmp / "mem-out")
                memory.append({"tokenizer": tokenizer, "input_mb": 0.0, **floor})
                print(
                    f"memory {tokenizer:5s} imports only: main {floor['main_mb']:.0f} MB, "
                    f"PSS {floor['tree_pss_mb']:.0f} MB",
                    flush=True,
                )
            for size_mb in memory_sizes:
                n = corpus.write(big, int(size_mb * MB))
                for tokenizer in memory_tokenizers:
                    m = peak_memory(big, tokenizer, tmp / "mem-out")
                    memory.append({"tokenizer": tokenizer, "input_mb": n / MB, **m})
                    print(
                        f"memory {tokenizer:5s} {n / MB:7.1f} MB: main {m['main_mb']:.0f} MB, largest worker "
                        f"{m['worker_mb']:.0f} MB, tree PSS {m['tree_pss_mb']:.0f} MB, {m['seconds']:.1f} s",
                        flush=True,
                    )
            big.unlink()

    # ------------------------------------------------ report
    print(
        "\nThroughput (median over rounds of MB/s and of per-round ratios; CPU s = CPU seconds of the "
        "process and its workers):\n"
    )
    print("| contender | MB/s | CPU s | ratio |\n|---|---|---|---|")
    print(f"| bare `encode_ordinary` loop, 1 process | {med['bare_mb_per_s']:.2f} | {med['bare_cpu_s']:.1f} | 1 |")
    print(
        f"| ours `tokenize_files`, workers=1 | {med['ours-1_mb_per_s']:.2f} | {med['ours-1_cpu_s']:.1f} | "
        f"{med['ours1_over_bare']:.3f} x bare ({med['ours1_over_bare_cpu']:.3f} in CPU time) |"
    )
    print(
        f"| ours `tokenize_files`, workers=2 | {med['ours-2_mb_per_s']:.2f} | {med['ours-2_cpu_s']:.1f} | "
        f"{med['ours2_over_ours1']:.3f} x ours workers=1; {med['ours2_over_bare2']:.3f} x bare 2-process |"
    )
    print(
        f"| bare loop, 2-process pool | {med['bare-2_mb_per_s']:.2f} | {med['bare-2_cpu_s']:.1f} | "
        f"{med['bare2_over_bare']:.3f} x bare |"
    )
    print(
        f"\n{args.rounds} rounds on {size / MB:.0f} MB; other processes used up to {med['others_vcpu']:.2f} vCPU "
        f"during a contender (median over rounds); {len(quiet)} quiet rounds (< {QUIET_VCPU} vCPU)"
        + (
            f": ours-1/bare {med_quiet['ours1_over_bare']:.3f}, ours-2/ours-1 {med_quiet['ours2_over_ours1']:.3f}, "
            f"bare-2/bare {med_quiet['bare2_over_bare']:.3f}"
            if med_quiet
            else ""
        )
        + f". With two idle cores, ours-2 / ours-1 could reach at most {med['ours2_over_ours1_cpu_bound']:.2f} "
        "(2 x ours-1 CPU s / ours-2 CPU s). Same token count with 1 and 2 workers: "
        f"{tokens_match}."
    )

    goals = [
        (
            "tokenize, 1 worker / bare loop (wall time)",
            f">= {GOAL_ONE_WORKER}",
            med["ours1_over_bare"],
            med["ours1_over_bare"] >= GOAL_ONE_WORKER,
        ),
        (
            "tokenize, 1 worker / bare loop (CPU time: the wall ratio of a quiet machine)",
            f">= {GOAL_ONE_WORKER}",
            med["ours1_over_bare_cpu"],
            med["ours1_over_bare_cpu"] >= GOAL_ONE_WORKER,
        ),
        (
            f"tokenize, 2 workers / 1 worker (wall time; bare 2-process / bare got {med['bare2_over_bare']:.2f} "
            "in the same rounds)",
            f">= {GOAL_TWO_WORKERS}",
            med["ours2_over_ours1"],
            med["ours2_over_ours1"] >= GOAL_TWO_WORKERS,
        ),
    ]
    if memory:
        print(
            "\nPeak memory (fresh process each, workers = all cores; MB): main process VmHWM, largest pool "
            "worker ru_maxrss, peak PSS of main + workers sampled every 50 ms:\n"
        )
        print(
            "| tokenizer | input MB | main process peak RSS | largest worker peak RSS | peak PSS, all processes | "
            "seconds |"
        )
        print("|---|---|---|---|---|---|")
        for m in memory:
            label = "imports only" if m["input_mb"] == 0 else f"{m['input_mb']:.0f}"
            print(
                f"| {m['tokenizer']} | {label} | {m['main_mb']:.0f} | {m['worker_mb']:.0f} | "
                f"{m['tree_pss_mb']:.0f} | {m['seconds']:.1f} |"
            )
        for tokenizer in memory_tokenizers:
            runs = sorted(
                (m for m in memory if m["tokenizer"] == tokenizer and m["input_mb"] > 0), key=lambda m: m["input_mb"]
            )
            if len(runs) >= 2:
                workers = os.cpu_count() or 1
                small, large = (m["main_mb"] + workers * m["worker_mb"] for m in (runs[0], runs[-1]))
                goals.append(
                    (
                        f"peak memory ({tokenizer}), {runs[-1]['input_mb']:.0f} MB / {runs[0]['input_mb']:.0f} MB "
                        f"input: main + {workers} workers' peak RSS (main alone "
                        f"{runs[-1]['main_mb'] / runs[0]['main_mb']:.2f}, sampled PSS "
                        f"{runs[-1]['tree_pss_mb'] / runs[0]['tree_pss_mb']:.2f})",
                        f"<= {GOAL_MEMORY}",
                        large / small,
                        large / small <= GOAL_MEMORY,
                    )
                )
    print("\n| goal | target | measured | result |\n|---|---|---|---|")
    for name, target, value, ok in goals:
        print(f"| {name} | {target} | {value:.3f} | {verdict(ok)} |")

    import tiktoken

    summary = {
        "corpus_bytes": size,
        "rounds": args.rounds,
        "chunk_bytes": CHUNK_BYTES,
        "cpus": os.cpu_count(),
        "tiktoken": tiktoken.__version__,
        "median": med,
        "median_quiet_rounds": med_quiet,
        "quiet_rounds": len(quiet),
        "tokens_match": tokens_match,
        "rounds_detail": rounds,
        "memory": memory,
        "goals": [{"goal": n, "target": t, "measured": v, "pass": ok} for n, t, v, ok in goals],
    }
    out = REPO / "bench" / "results" / "tokenize_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
