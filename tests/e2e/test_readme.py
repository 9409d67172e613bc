"""The README is a test: every shell command in README.md's code blocks, and every example command line in a
stage module's docstring (``stages/*.py``), runs here in a copy of the repository with a tiny ``params.yaml``.

The commands are read from the files at test time, so a new one is picked up, and each must match exactly one
rule of ``RULES``: run as written, or shrunk (a rewrite that adds overrides or points a path into the test's
folder), or skipped with the reason (a cluster of several nodes, a GPU, the network). A command with no rule
fails ``test_every_command_has_exactly_one_rule``. Commands that another test already runs as written (on Slurm,
a DVC queue, Snakemake outside the workspace) run only there: their rules match only that exact text.

All commands run in one workspace, in order (the README's, then the stages' docstrings'), so a stage run by hand
finds what the stages before it wrote; a command that appears twice runs where it first appears. Nothing has run
in it before the README's first command, ``make run``.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    README_EXPERIMENT_HELLASWAG,
    README_EXPERIMENT_LR,
    README_HALVING_LOCALLY,
    README_QUEUE_TWO_EXPERIMENTS,
    README_REPRO,
    README_RESTORE_ELSEWHERE,
    README_RUN_QUEUED_EXPERIMENTS,
    README_SNAKEMAKE_ELSEWHERE,
    README_SWEEP_LOCALLY,
    README_SWEEP_ON_DVC_QUEUE,
    README_SWEEP_REPORT,
    REPO,
    TINY_TEXT,
    copy_worktree,
    dvc_env,
    tiny_params,
    write_params,
)
from slurm_jobs import README_PIPELINE_ON_SLURM, README_SWEEP_ON_SLURM

from pipeline.stages import STAGES

TIMEOUT_S = 600
# The tiny corpus with the characters of the README's prompts ("ROMEO:"), which a char vocabulary must hold.
README_CORPUS = TINY_TEXT + "ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 10
SHELL_FENCE = re.compile(r"^\s*```(?:bash|sh|shell)\s*$")
DOCSTRING_COMMAND = re.compile(r"^(python -m |torchrun |srun )")
# A short pytest run of one quick test file on one worker: `make test` itself, without the suite running inside itself.
INNER_PYTEST = "PYTEST_WORKERS=1 PYTEST_ARGS='-q -p no:cacheprovider tests/unit/config/test_loader.py'"


@dataclass(frozen=True)
class Command:
    """One command line of a document, continuation lines joined and the trailing comment dropped."""

    source: str  # "README.md:57"
    text: str


@dataclass(frozen=True)
class Rule:
    """How the commands matching ``pattern`` (a full-match regex) run here, or why they cannot."""

    pattern: str
    skip: str = ""  # the reason it cannot run here: a cluster, a GPU or the network
    rewrite: tuple[tuple[str, str], ...] = ()  # (old, new) text replacements; {tmp} is the test's folder
    setup: str = ""  # shell run in the workspace before the command
    after: str = ""  # shell run after it, undoing what later commands must not see
    expect: str = ""  # text the command's output must contain


SWEEP = (("sweeps/lr_width.yaml", "sweeps/readme.yaml"),)
# README commands that another test runs as written, asserting more on what they did, run only there (the rules
# below match only the exact text those tests run, so a README edit fails test_every_command_has_exactly_one_rule
# until they agree).
SLURM_PIPELINE_TEST = "tests/e2e/test_slurm_e2e.py::test_readme_pipeline_on_slurm_two_nodes_fsdp"
SLURM_SWEEP_TEST = "tests/e2e/test_sweep_slurm_e2e.py::test_a_halving_sweep_trains_its_rungs_as_concurrent_slurm_jobs"
DVC_SWEEP_TEST = "tests/e2e/test_sweep_dvc_e2e.py::test_sweep_points_run_as_named_dvc_experiments"
SNAKEMAKE_TEST = "tests/e2e/test_snakemake_e2e.py (its module fixture)"
DVC_TEST = "tests/e2e/test_dvc_e2e.py (its module fixture)"
SWEEP_TEST = "tests/e2e/test_sweep_e2e.py (its module fixture)"
TINY_SWEEP = "printf 'base: ../params.yaml\\ngrid:\\n  optimizer.lr: [0.001, 0.002]\\n' > sweeps/readme.yaml"
# A HellaSwag file of one example in the tiny corpus's characters stands in for the official one (a download)
TINY_HELLASWAG = (
    """printf '%s\\n' '{"ctx": "ROMEO:", "endings": ["But soft", "All:", "Speak", "hear"], "label": 0}' """
    "> hellaswag.jsonl"
)

RULES = (
    # Quick start and set-up. `.venv` in the workspace is this test's venv (see venv_shim), already installed.
    # The README's workspace starts unrun: its first command runs the pipeline, and that run is committed.
    Rule(r"make run", after="git add -A && git commit -q -m 'first run'", expect="samples: out/samples.txt"),
    Rule(r"make test", rewrite=(("make test", f"make test {INNER_PYTEST}"),), expect="passed"),
    Rule(r"make test-fast", rewrite=(("make test-fast", f"make test-fast {INNER_PYTEST}"),), expect="passed"),
    Rule(r"make test-quality", skip="trains the default experiment for 2000 steps, outside CI's time budget"),
    Rule(r"make setup TORCH_INDEX=https://\S+", skip="needs the network (a PyTorch wheel index)"),
    Rule(r"python -m venv \.venv && .*pip install .*", skip="needs the network (PyTorch and the project from PyPI)"),
    # DVC
    Rule(re.escape(README_REPRO), skip=f"run as written by {DVC_TEST}"),
    Rule(re.escape(README_EXPERIMENT_LR), skip=f"run as written by {DVC_TEST}"),
    Rule(re.escape(README_QUEUE_TWO_EXPERIMENTS), skip=f"run as written by {DVC_TEST}"),
    Rule(re.escape(README_RUN_QUEUED_EXPERIMENTS), skip=f"run as written by {DVC_TEST}"),
    Rule(r"dvc exp show", expect="val_loss"),
    Rule(r"dvc metrics show", expect="val_loss"),
    Rule(r"dvc plots show", expect="dvc_plots"),
    Rule(r"python -m pipeline\.params use \w+", expect="wrote params.yaml", after="git checkout -- params.yaml"),
    Rule(r"python -m pipeline\.params check", expect="ok"),
    Rule(r"python -m pipeline\.batch_at \d+ --chars \d+", expect="rows of"),
    Rule(r"python -m pipeline\.params schema \S+\.json", after="test -s params.schema.json"),
    # Snakemake
    Rule(r"snakemake -j 2"),
    Rule(
        re.escape(README_SNAKEMAKE_ELSEWHERE), skip=f"run as written (/scratch a temporary folder) by {SNAKEMAKE_TEST}"
    ),
    Rule(
        r"snakemake -j 2 --config params=params/my_experiment\.yaml",
        setup="cp params.yaml params/my_experiment.yaml",
        after="rm params/my_experiment.yaml",
    ),
    Rule(re.escape(README_PIPELINE_ON_SLURM), skip=f"run as written by {SLURM_PIPELINE_TEST}"),
    # Sweeps: a two-point sweep of the tiny params.yaml stands in for the example's 9 points of 300 steps
    Rule(r"python -m pipeline\.sweep list sweeps/lr_width\.yaml", rewrite=SWEEP, setup=TINY_SWEEP, expect="2 points"),
    Rule(re.escape(README_SWEEP_LOCALLY), skip=f"run as written (the sweep file made tiny) by {SWEEP_TEST}"),
    Rule(re.escape(README_SWEEP_ON_SLURM), skip=f"run as written by {SLURM_SWEEP_TEST}"),
    Rule(r"python -m pipeline\.sweep list sweeps/lr_halving\.yaml", expect="800 train steps, 0.30x the 2,700"),
    Rule(re.escape(README_HALVING_LOCALLY), skip=f"run as written (the sweep file made tiny) by {SWEEP_TEST}"),
    Rule(re.escape(README_SWEEP_REPORT), skip=f"run as written by {SWEEP_TEST}"),
    Rule(re.escape(README_SWEEP_ON_DVC_QUEUE), skip=f"run as written by {DVC_SWEEP_TEST}"),
    # Working across machines: the cluster's cache and a remote in the test's folder (the workspace keeps its own
    # cache for the commands after), a copy of `make run`'s out/ as a run made elsewhere
    Rule(
        r"python -m pipeline\.storage setup --cache /lustre/team/dvc-cache --remote shared=/lustre/team/dvc-remote",
        rewrite=(("/lustre/team", "{tmp}"),),
        after="dvc config --local --unset cache.dir && dvc config --local --unset cache.shared",
        expect="shared",
    ),
    Rule(
        r"python -m pipeline\.storage import-run /scratch/runs/exp1 --name exp1",
        rewrite=(("/scratch/runs/exp1", "../exp1"),),
        setup="cp -a out ../exp1",
        after="dvc config --local --unset cache.type",
        expect="runs/exp1",
    ),
    Rule(r"dvc push -A"),
    Rule(r"python -m pipeline\.storage push-runs", expect="run records"),
    Rule(r"dvc pull --run-cache"),
    Rule(re.escape(README_RESTORE_ELSEWHERE), skip=f"run as written, in a clone that pulled, by {DVC_TEST}"),
    Rule(
        r"dvc exp (push|pull) origin .*",
        skip="needs a git remote holding experiments: tests/e2e/test_dvc_e2e.py pushes and pulls them through a "
        "bare repository, and over SSH",
    ),
    Rule(r"make lock", skip="resolves every dependency against PyPI (minutes); make setup installs the lock in CI"),
    # One stage by hand, and the stages' docstrings
    Rule(r"python -m stages\.(source|tokenize|train|evaluate|export) params\.yaml"),
    Rule(
        r"python -m stages\.train params\.yaml --optimizer\.lr \S+ --training\.max_steps \d+",
        rewrite=(("--training.max_steps 500", "--training.max_steps 30"),),  # 500 tiny steps take 2 min on 2 cores
        expect="done:",
    ),
    Rule(r'python -m stages\.generate params\.yaml --generate\.prompt "ROMEO:" --generate\.seed 7'),
    Rule(r"python -m stages\.train --help", expect="Train stage"),
    Rule(r"python -m stages\.(generate|export) params\.yaml --(generate|export)\.checkpoint best"),
    Rule(
        r"python -m pipeline\.params import-nanugpt \S+/tinyshakespeare\.yaml -o params/my_run\.yaml",
        rewrite=(("../nanuGPT/configs", "tests/assets/nanugpt"),),  # our own config in nanuGPT's format
        after="python -m pipeline.params check params/my_run.yaml && rm params/my_run.yaml",
    ),
    Rule(r"torchrun --standalone --nproc-per-node=2 -m stages\.train params\.yaml", expect="done:"),
    # 4 processes of a 4-sequence micro-batch would exceed the tiny global batch of 8: 2 sequences each
    Rule(
        r"torchrun --standalone --nproc-per-node=4 -m stages\.train params\.yaml",
        rewrite=(("params.yaml", "params.yaml --training.device_batch_size 2"),),
        expect="done:",
    ),
    Rule(r"srun torchrun --nnodes=\$SLURM_NNODES .*", skip="needs a Slurm allocation of several nodes (CI has one)"),
    # Benchmarks
    Rule(
        r"python -m stages\.evaluate params\.yaml --eval\.tasks '\[hellaswag\]'",
        rewrite=(
            ("'[hellaswag]'", "'[hellaswag]' --eval.hellaswag_path hellaswag.jsonl --eval.hellaswag_sha256 null"),
        ),
        setup=TINY_HELLASWAG,
        expect="hellaswag_acc",
    ),
    Rule(re.escape(README_EXPERIMENT_HELLASWAG), skip=f"run as written by {DVC_TEST}"),
    Rule(r"pip install -e '\.\[eval\]'", skip="needs the network (lm-eval from PyPI; make setup installs it)"),
    Rule(r"lm_eval --model hf .* --tasks hellaswag .*", skip="needs the network (the task's dataset from the hub)"),
    Rule(r"torchrun --standalone --nproc-per-node=2 -m stages\.evaluate params\.yaml", expect="val_loss"),
    # Development
    Rule(r"python -m bench\.train_throughput --pairs \d+", rewrite=(("--pairs 10", "--pairs 1 --steps 5"),)),
)


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def joined_lines(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Logical command lines: ``\\`` continuations joined, comments dropped, blank lines left out."""
    start, parts = 0, []
    for number, raw in lines:
        line = raw.strip()
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(strip_comment(line))
        command = " ".join(p for p in parts if p)
        parts = []
        if command:
            yield start, command


def markdown_commands(text: str, name: str) -> list[Command]:
    """Every command of the shell code blocks (```bash, ```sh, ```shell) of a Markdown text."""
    blocks: list[list[tuple[int, str]]] = []
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if not inside and SHELL_FENCE.match(line):
            inside = True
            blocks.append([])
        elif inside and line.strip().startswith("```"):
            inside = False
        elif inside:
            blocks[-1].append((number, line))
    return [Command(f"{name}:{n}", c) for block in blocks for n, c in joined_lines(block)]


def synopsis_to_command(line: str) -> str:
    """A docstring synopsis as a command: ``[x ...]`` placeholders dropped, other ``[optional]`` parts kept."""
    line = re.sub(r"\s*\[[^\]]*\.\.\.\]", "", line)
    return re.sub(r"\[([^\]]*)\]", r"\1", line)


def docstring_commands(path: Path) -> list[Command]:
    """Every example command line (``python -m``, ``torchrun``, ``srun``) in a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    lines = doc.splitlines()
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        if DOCSTRING_COMMAND.match(lines[i].strip()):
            block = [(i + 1, lines[i])]
            while lines[i].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                block.append((i + 1, lines[i]))
            found += [(n, synopsis_to_command(c)) for n, c in joined_lines(block)]
        i += 1
    relative = path.relative_to(REPO)
    return [Command(f"{relative}:docstring:{n}", c) for n, c in found]


def readme_commands() -> list[Command]:
    return markdown_commands((REPO / "README.md").read_text(), "README.md")


def stage_commands() -> list[Command]:
    """The stages' docstring commands, in pipeline order (source first, export last)."""
    return [c for name in STAGES for c in docstring_commands(REPO / "stages" / f"{name}.py")]


def rules_for(command: Command) -> list[Rule]:
    return [rule for rule in RULES if re.fullmatch(rule.pattern, command.text)]


def rule_for(command: Command) -> Rule:
    """The one rule of ``command``; LookupError naming the command when none or several match."""
    matching = rules_for(command)
    if len(matching) != 1:
        found = "no rule" if not matching else f"{len(matching)} rules ({', '.join(r.pattern for r in matching)})"
        raise LookupError(
            f"{command.source}: {command.text!r} has {found}: add one to RULES in tests/e2e/test_readme.py"
        )
    return matching[0]


def test_every_command_has_exactly_one_rule() -> None:
    commands = readme_commands() + stage_commands()
    problems = []
    for command in commands:
        try:
            rule_for(command)
        except LookupError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


def test_every_rule_is_used() -> None:
    texts = [c.text for c in readme_commands() + stage_commands()]
    unused = [rule.pattern for rule in RULES if not any(re.fullmatch(rule.pattern, t) for t in texts)]
    assert not unused, f"rules that match no command (remove them): {unused}"


def test_a_new_command_without_a_rule_is_caught() -> None:
    text = "intro\n\n```bash\ndvc repro   # known\nfrobnicate --all \\\n    --now   # new\n```\n\n```\nnot shell\n```\n"
    commands = markdown_commands(text, "X.md")
    assert [(c.source, c.text) for c in commands] == [("X.md:4", "dvc repro"), ("X.md:5", "frobnicate --all --now")]
    assert rule_for(commands[0]).skip == f"run as written by {DVC_TEST}"
    with pytest.raises(LookupError, match="X.md:5: 'frobnicate --all --now' has no rule"):
        rule_for(commands[1])


def test_docstring_synopses_become_commands() -> None:
    assert synopsis_to_command("python -m stages.evaluate [params.yaml] [--section.key value ...]") == (
        "python -m stages.evaluate params.yaml"
    )
    assert synopsis_to_command('python -m stages.generate [params.yaml] [--generate.prompt "ROMEO:"]') == (
        'python -m stages.generate params.yaml --generate.prompt "ROMEO:"'
    )
    texts = [c.text for c in stage_commands()]
    assert texts[:3] == [
        "python -m stages.source params.yaml",
        "python -m stages.tokenize params.yaml",
        "python -m stages.train params.yaml",
    ]


def venv_shim(ws: Path) -> None:
    """``ws/.venv``: this test's venv seen through links, marked installed, so ``make`` in the workspace uses it
    and installs nothing (the real venv and its editable install are never touched)."""
    shim, real = ws / ".venv", Path(sys.prefix)
    shim.mkdir()
    shutil.copy(real / "pyvenv.cfg", shim / "pyvenv.cfg")
    for name in ("bin", "lib", "lib64", "include"):
        if (real / name).exists():
            (shim / name).symlink_to(real / name)
    (shim / ".installed").touch()  # newer than the copied pyproject.toml: make's set-up is done


def shell(command: str, ws: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=ws, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def checked(command: str, ws: Path, env: dict[str, str]) -> str:
    """Run a shell command in ``ws``; fail the test with its output unless it exits 0."""
    result = shell(command, ws, env)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"`{command}` exited with {result.returncode} in {ws}\n{output[-6000:]}")
    return output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The one workspace every command runs in, in order (the README's, then the stages' docstrings'): a committed
    git + DVC repository of the tracked files, a tiny explicit ``params.yaml`` on a corpus inside it and this venv
    as ``.venv``. Nothing has run in it: the README's first command, ``make run``, runs the pipeline."""
    root = tmp_path_factory.mktemp("readme")
    env = dvc_env(root)
    ws = copy_worktree(root / "ws")
    env["PYTHONPATH"] = str(ws)
    (ws / "corpus.txt").write_text(README_CORPUS, encoding="utf-8")
    preset = write_params(root / "tiny.yaml", tiny_params("corpus.txt"))
    venv_shim(ws)
    checked(f"python -m pipeline.params use {preset}", ws, env)
    checked("git init -q && git add -A && git commit -q -m 'tiny workspace'", ws, env)
    return ws, env


def params_of(commands: list[Command]) -> list[object]:
    """pytest params for ``test_command``: ids are the commands, marks from the rules (slow; skip). A command
    that a document repeats runs where it first appears."""
    params = []
    first_seen: dict[str, str] = {}
    for command in commands:
        try:
            rule = rule_for(command)
        except LookupError:
            continue  # test_every_command_has_exactly_one_rule fails for it
        marks = [pytest.mark.slow]
        if rule.skip:
            marks.append(pytest.mark.skip(reason=rule.skip))
        elif command.text in first_seen:
            marks.append(pytest.mark.skip(reason=f"the command of {first_seen[command.text]}, run there"))
        first_seen.setdefault(command.text, command.source)
        params.append(pytest.param(command, rule, id=f"{command.source} {command.text}", marks=marks))
    return params


@pytest.mark.parametrize(("command", "rule"), params_of(readme_commands() + stage_commands()))
def test_command(command: Command, rule: Rule, workspace: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    ws, env = workspace
    text = command.text
    for old, new in rule.rewrite:
        text = text.replace(old, new.format(tmp=tmp_path))
    if rule.setup:
        checked(rule.setup, ws, env)
    output = checked(text, ws, env)
    if rule.after:
        checked(rule.after, ws, env)
    assert rule.expect in output, f"`{text}` ran but printed no {rule.expect!r}:\n{output[-4000:]}"
