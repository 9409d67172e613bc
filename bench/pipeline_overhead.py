"""Pipeline overhead: no-op ``dvc repro`` / ``snakemake`` of our pipeline against a trivial 4-stage ``cp`` pipeline.

    python -m bench.pipeline_overhead [--rounds 10]

In a temporary folder the benchmark builds four git repositories:

* two copies of this project (the files ``git ls-files --cached --others
  --exclude-standard`` lists, as the tests do) with a tiny params file (a
  2-layer char model, 20 steps, on a small generated corpus) and every stage
  of ``dvc.yaml`` / ``Snakefile`` (tokenize, train, evaluate, generate, and
  any added since), one run with
  ``dvc repro`` and one with ``snakemake -j 1`` so each has its own up-to-date
  artifacts;
* a trivial DVC pipeline and a trivial Snakefile, each four stages
  ``cp a.txt b.txt``, ``cp b.txt c.txt``, ... of a one-line file.

After one full run of each, it times ``--rounds`` interleaved pairs of no-op
runs (nothing changed, so nothing runs) and reports the median of the
per-pair ratios ours / trivial:

* ``dvc repro`` (goal <= 1.5x the trivial pipeline);
* ``snakemake -j 1`` (the issue's goal is stated for DVC; the same 1.5x is
  printed for comparison);
* ``python -m stages.train --help`` against ``python -c "import torch"``
  (goal <= 1.2x).

It also checks that a single-process train run does not start ``torchrun``:
the train stage's command, ``python -m pipeline.launch params.yaml``, must say
``(in this process)`` in the first ``dvc repro``'s output.

Every command runs with this Python's folder first on PATH, DVC analytics off
and DVC / git configuration private to the run. Prints Markdown tables and
goals with PASS/MISS and writes JSON to ``bench/results/pipeline_overhead.json``.
Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GOAL_DVC = 1.5
GOAL_HELP = 1.2
TIMEOUT_S = 600
STAGES = tuple(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])  # tokenize, train, ...
DVC_NOOP = "Data and pipelines are up to date."
SNAKEMAKE_NOOP = "Nothing to be done"

TINY_PARAMS = {
    "general": {"seed": 7, "device_type": "cpu"},
    "data": {"module": "tokenized", "dataset": "tiny", "source": "corpus.txt", "val_fraction": 0.1},
    "tokenizer": {"module": "char"},
    "model": {"module": "nanogpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16},
    "training": {
        "max_steps": 20,
        "device_batch_size": 4,
        "global_batch_size": 8,
        "log_every": 10,
        "checkpoint_every": 10,
        "keep_last": 1,
    },
    "optimizer": {"module": "adamw_nanogpt", "lr": 3e-3},
    "scheduler": {"module": "cosine", "warmup_steps": 2},
    "eval": {"eval_every": 10, "eval_iters": 2},
    "generate": {"prompt": "The", "num_samples": 1, "max_new_tokens": 20},
}

TRIVIAL_DVC = {
    "stages": {
        f"s{i}": {"cmd": f"cp {a}.txt {b}.txt", "deps": [f"{a}.txt"], "outs": [f"{b}.txt"]}
        for i, (a, b) in enumerate(zip("abcd", "bcde"), start=1)
    }
}
TRIVIAL_SNAKEFILE = """\
rule all:
    input: "e.txt"

""" + "\n".join(
    f'rule s{i}:\n    input: "{a}.txt"\n    output: "{b}.txt"\n    shell: "cp {{input}} {{output}}"\n'
    for i, (a, b) in enumerate(zip("abcd", "bcde"), start=1)
)


def corpus_text() -> str:
    """About 20 KB of plain English-like lines (deterministic)."""
    subjects = ["the miller", "a sailor", "my cousin", "the old king", "her sister", "our neighbour"]
    verbs = ["walked to", "wrote about", "looked at", "spoke of", "forgot", "remembered"]
    objects = ["the river", "a green door", "the market", "an empty house", "the long road", "a letter"]
    lines = []
    for i in range(400):
        lines.append(
            f"{subjects[i % 6].capitalize()} {verbs[(i // 6) % 6]} {objects[(i // 36) % 6]}, "
            f"and then {subjects[(i * 7) % 6]} {verbs[(i * 5) % 6]} {objects[(i * 11) % 6]}."
        )
    return "\n".join(lines) + "\n"


def clean_env(tmp: Path) -> dict[str, str]:
    """This Python first on PATH, no analytics, private DVC and git config, a git author, default artifact dirs."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUT_DIR")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"),
        DVC_GLOBAL_CONFIG_DIR=str(tmp / "dvc-global-config"),
        DVC_SYSTEM_CONFIG_DIR=str(tmp / "dvc-system-config"),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="nanugpt bench",
        GIT_AUTHOR_EMAIL="bench@nanugpt.invalid",
        GIT_COMMITTER_NAME="nanugpt bench",
        GIT_COMMITTER_EMAIL="bench@nanugpt.invalid",
    )
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run a command; return its wall seconds and its output (stdout + stderr). Fails loudly on a non-zero exit."""
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {cwd} exited with {result.returncode}:\n{output}")
    return seconds, output


def git_repo(path: Path, env: dict[str, str]) -> None:
    run(["git", "init", "-q"], path, env)
    if not (path / ".dvc").is_dir():
        run(["dvc", "init", "-q"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-q", "-m", "bench workspace"], path, env)


def project_copy(dest: Path, env: dict[str, str]) -> Path:
    """A git repository holding this project's files, a small corpus and the tiny params, expanded."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    (dest / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    preset = dest.parent / f"{dest.name}-tiny.yaml"
    preset.write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    run([sys.executable, "-m", "pipeline.params", "use", str(preset)], dest, env)
    git_repo(dest, env)
    return dest


def trivial_copy(dest: Path, env: dict[str, str], snakemake: bool) -> Path:
    """A git repository with a.txt and a 4-stage cp pipeline (dvc.yaml, or a Snakefile)."""
    dest.mkdir(parents=True)
    (dest / "a.txt").write_text("one line\n")
    if snakemake:
        (dest / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
    else:
        (dest / "dvc.yaml").write_text(yaml.safe_dump(TRIVIAL_DVC, sort_keys=False))
    git_repo(dest, env)
    return dest


def pairs(
    name: str,
    ours: tuple[list[str], Path],
    reference: tuple[list[str], Path],
    *,
    rounds: int,
    env: dict[str, str],
    expect: str | None,
) -> list[dict[str, float]]:
    """``rounds`` interleaved runs of ours and the reference; each output must contain ``expect``."""
    rows = []
    for r in range(rounds):
        row: dict[str, float] = {}
        for who in ("ours", "reference") if r % 2 == 0 else ("reference", "ours"):
            args, cwd = ours if who == "ours" else reference
            seconds, output = run(args, cwd, env)
            if expect and expect not in output:
                raise RuntimeError(f"{name}: {' '.join(args)} in {cwd} was not a no-op:\n{output}")
            row[who] = seconds
        row["ratio"] = row["ours"] / row["reference"]
        rows.append(row)
        print(
            f"{name} pair {r + 1:2d}: ours {row['ours']:.2f} s | reference {row['reference']:.2f} s | "
            f"ratio {row['ratio']:.3f}",
            flush=True,
        )
    return rows


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved pairs per comparison")
    parser.add_argument("--tmp", default=None, help="folder for the temporary repositories")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        env = clean_env(tmp)
        python = sys.executable

        print("setting up the four repositories and running each pipeline once ...", flush=True)
        ours_dvc = project_copy(tmp / "ours-dvc", env)
        first_dvc_s, first_dvc = run(["dvc", "repro"], ours_dvc, env)
        launch_lines = [line for line in first_dvc.splitlines() if line.startswith("launch:")]
        in_process = bool(launch_lines) and all(
            "(in this process)" in line and "torch.distributed.run" not in line for line in launch_lines
        )
        ran = [s for s in STAGES if f"Running stage '{s}'" in first_dvc]
        print(
            f"first dvc repro: {first_dvc_s:.1f} s, stages run: {', '.join(ran)}; {' / '.join(launch_lines)}",
            flush=True,
        )

        ours_smk = project_copy(tmp / "ours-snakemake", env)
        first_smk_s, _ = run(["snakemake", "-j", "1"], ours_smk, env)
        print(f"first snakemake -j 1: {first_smk_s:.1f} s", flush=True)

        trivial_dvc = trivial_copy(tmp / "trivial-dvc", env, snakemake=False)
        run(["dvc", "repro"], trivial_dvc, env)
        trivial_smk = trivial_copy(tmp / "trivial-snakemake", env, snakemake=True)
        run(["snakemake", "-j", "1"], trivial_smk, env)

        results = {
            "dvc": pairs(
                "dvc repro",
                (["dvc", "repro"], ours_dvc),
                (["dvc", "repro"], trivial_dvc),
                rounds=args.rounds,
                env=env,
                expect=DVC_NOOP,
            ),
            "snakemake": pairs(
                "snakemake",
                (["snakemake", "-j", "1"], ours_smk),
                (["snakemake", "-j", "1"], trivial_smk),
                rounds=args.rounds,
                env=env,
                expect=SNAKEMAKE_NOOP,
            ),
            "help": pairs(
                "--help",
                ([python, "-m", "stages.train", "--help"], ours_dvc),
                ([python, "-c", "import torch"], ours_dvc),
                rounds=args.rounds,
                env=env,
                expect=None,
            ),
        }

    med = {k: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for k, rows in results.items()}
    print("\nMedians over interleaved pairs (seconds of wall time; ratio = median of per-pair ratios):\n")
    print("| comparison | ours | reference | ours / reference |\n|---|---|---|---|")
    labels = {
        "dvc": f"no-op `dvc repro`: our {len(STAGES)} stages vs trivial 4-stage `cp`",
        "snakemake": f"no-op `snakemake -j 1`: our {len(STAGES)} stages vs trivial 4-rule `cp`",
        "help": '`python -m stages.train --help` vs `python -c "import torch"`',
    }
    for key, label in labels.items():
        m = med[key]
        print(f"| {label} | {m['ours']:.2f} s | {m['reference']:.2f} s | {m['ratio']:.3f} |")

    goals = [
        (
            "no-op `dvc repro` / trivial pipeline",
            f"<= {GOAL_DVC}",
            f"{med['dvc']['ratio']:.3f}",
            med["dvc"]["ratio"] <= GOAL_DVC,
        ),
        (
            "no-op `snakemake` / trivial pipeline (same bar as DVC)",
            f"<= {GOAL_DVC}",
            f"{med['snakemake']['ratio']:.3f}",
            med["snakemake"]["ratio"] <= GOAL_DVC,
        ),
        (
            "`stages.train --help` / `import torch`",
            f"<= {GOAL_HELP}",
            f"{med['help']['ratio']:.3f}",
            med["help"]["ratio"] <= GOAL_HELP,
        ),
        (
            "single-process train runs without torchrun",
            "`(in this process)`",
            launch_lines[0] if launch_lines else "no launch line",
            in_process,
        ),
    ]
    print("\n| goal | target | measured | result |\n|---|---|---|---|")
    for goal, target, value, ok in goals:
        print(f"| {goal} | {target} | {value} | {verdict(ok)} |")

    versions = {}
    for tool in ("dvc", "snakemake"):
        versions[tool] = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, env=env, check=False
        ).stdout.strip()
    summary = {
        "rounds": args.rounds,
        "versions": versions,
        "first_dvc_repro_s": first_dvc_s,
        "first_snakemake_s": first_smk_s,
        "launch_lines": launch_lines,
        "median": med,
        "pairs": results,
        "goals": [{"goal": g, "target": t, "measured": v, "pass": ok} for g, t, v, ok in goals],
    }
    out = REPO / "bench" / "results" / "pipeline_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
