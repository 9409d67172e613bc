"""The error catalogue: bad inputs as a new user types them, each run through the command's own entry point.

Every case runs a command (``python -m <module> ...``) in its own copy of one tiny
workspace (a corpus, its token files and a 4-step run with metrics and samples)
and asserts the exit code (2 for params, 1 for other user errors), a phrase of
the message, no traceback on stdout or stderr, and that the files the case names
(by default every file that existed) are unchanged.

Most cases call the module's ``main(argv)`` in this process, in the case's folder
and with its environment: all that ``python -m`` does but start Python. A case
marked ``subprocess=True`` runs the real command in a fresh interpreter, where the
process boundary is what is tested: the exit status that ``sys.exit(main())``
gives the shell, and a user's module found through the command's ``PYTHONPATH``.
The workspace is built once per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, TINY_TEXT, call_main, lock_folder, tiny_params, unlock_folder, write_params

import pipeline.params
import stages.evaluate
import stages.generate
import stages.tokenize
import stages.train
from nanugpt.files.checksum import write_checksum

ALL = ("**/*",)  # every file of the workspace
RUNS = ("data/**/*", "out/checkpoints/*", "out/plots/*", "out/metrics.json", "out/samples.txt")
TIMEOUT_S = 180
RUN_ENV = ("DATA_ROOT", "OUT_DIR", "NANUGPT_RUN_TIME")  # the caller's, which a case must not inherit
CORPUS = TINY_TEXT + "ROMEO:\nWhat light through yonder window breaks?\n\n" * 20
TOKEN_DIR = Path("data/tiny/char")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """One bad input: the command, what it must answer, and what it must leave alone."""

    name: str
    argv: tuple[str, ...]  # module, then its arguments
    code: int
    phrase: str  # a part of the message (stdout or stderr)
    unchanged: tuple[str, ...] = ALL  # globs of files, relative to the workspace, that must keep their bytes
    setup: Callable[[Path], None] | None = None
    before: tuple[tuple[str, ...], ...] = ()  # commands run first (their outcome is not checked)
    env: dict[str, str] = field(default_factory=dict)
    subprocess: bool = False  # run as a fresh interpreter, not through main() in this process


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    changed: list[str]


# Setups: they edit the case's own copy of the workspace.


def write_file(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def params_variant(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Write ``name``: the workspace's params.yaml with ``edit`` applied."""

    def setup(ws: Path) -> None:
        tree = yaml.safe_load((ws / "params.yaml").read_text())
        edit(tree)
        write_params(ws / name, tree)

    return setup


def params_text(name: str, edit: Callable[[str], str]) -> Callable[[Path], None]:
    """Write ``name``: the text of the workspace's params.yaml through ``edit``."""

    def setup(ws: Path) -> None:
        (ws / name).write_text(edit((ws / "params.yaml").read_text()))

    return setup


def edit_meta(change: Callable[[dict], object], checksum: bool = True) -> Callable[[Path], None]:
    """Edit ``meta.json`` as another tool would; with ``checksum``, its checksum follows (a meta.json that is
    whole but wrong), without, it is a damaged one."""

    def setup(ws: Path) -> None:
        path = ws / TOKEN_DIR / "meta.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
        if checksum:
            write_checksum(path)

    return setup


def flip_tensor_byte(ws: Path) -> None:
    """One byte of the newest checkpoint's tensor data flipped, in ``last.pt``, its step file and ``out/model``'s
    ``last.pt`` (hard links of one file in a run's folder; three files in the workspace's copy)."""
    names = ("out/checkpoints/last.pt", "out/checkpoints/step-0000004.pt", "out/model/last.pt")
    files: list[Path] = []
    for path in (ws / name for name in names):
        if not any(os.path.samefile(path, seen) for seen in files):
            files.append(path)
    for path in files:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40  # the tensors are most of a checkpoint
        path.write_bytes(bytes(data))


def stale_tokens(ws: Path) -> None:
    """The source stage's record names an edited corpus; the token files were made from the earlier one."""
    made_from = json.loads((ws / TOKEN_DIR / "source.json").read_text())
    made_from["files"][0]["sha256"] = "0" * 64
    (ws / TOKEN_DIR.parent / "source.json").write_text(json.dumps(made_from))


def interrupted_at_step_2(ws: Path) -> None:
    """The finished run as a run killed after its checkpoint at step 2 left it (the next train resumes)."""
    checkpoints = ws / "out/checkpoints"
    for name in ("last.pt", "last.pt.sha256", "step-0000004.pt", "step-0000004.pt.sha256"):
        (checkpoints / name).unlink()
    os.link(checkpoints / "step-0000002.pt", checkpoints / "last.pt")
    shutil.copy(checkpoints / "step-0000002.pt.sha256", checkpoints / "last.pt.sha256")


def replace_with_file(name: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        shutil.rmtree(ws / name)
        (ws / name).write_text("not a folder")

    return setup


def link_outside(name: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        shutil.rmtree(ws / name)
        (ws.parent / "elsewhere").mkdir(exist_ok=True)
        (ws / name).symlink_to(ws.parent / "elsewhere")

    return setup


def out_of_range_ids(ws: Path) -> None:
    path = ws / TOKEN_DIR / "train.bin"
    ids = np.fromfile(path, dtype=np.uint16)
    ids[::7] = 60000
    ids.tofile(path)


def truncate_last(ws: Path) -> None:
    path = ws / "out/checkpoints/last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def read_only(*names: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        for name in names:
            for path in [ws / name, *(p for p in (ws / name).rglob("*") if p.is_dir())]:
                lock_folder(path)

    return setup


def user_module(text: str) -> Callable[[Path], None]:
    return write_file("mypkg/broken.py", text)


def without(section: str) -> Callable[[dict], None]:
    return lambda tree: tree.pop(section)


def setting(section: str, key: str, value: object) -> Callable[[dict], None]:
    return lambda tree: tree[section].__setitem__(key, value)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        for one in setups:
            one(ws)

    return setup


def base_params(corpus: str = "corpus.txt") -> dict:
    return tiny_params(
        corpus,
        training={"max_steps": 4, "checkpoint_every": 2, "log_every": 2},
        eval={"eval_every": 2, "eval_iters": 1},
        generate={"max_new_tokens": 5},
    )


CORPUS_SHA = hashlib.sha256(CORPUS.encode()).hexdigest()
TRAIN, EVALUATE, GENERATE, TOKENIZE, CHECK = (
    "stages.train",
    "stages.evaluate",
    "stages.generate",
    "stages.tokenize",
    "pipeline.params",
)
P = "params.yaml"
MAINS: dict[str, Callable[[list[str]], int]] = {
    TRAIN: stages.train.main,
    EVALUATE: stages.evaluate.main,
    GENERATE: stages.generate.main,
    TOKENIZE: stages.tokenize.main,
    CHECK: pipeline.params.main,
}


def case(name: str, argv: tuple[str, ...], code: int, phrase: str, **kwargs: object) -> object:
    return pytest.param(Case(name, argv, code, phrase, **kwargs), id=name)  # type: ignore[arg-type]


CASES = [
    # Issue 15, defect 1: a failed train run keeps the previous run.
    case(
        "train-lr-inf-refused-before-any-work",
        (TRAIN, P, "--optimizer.lr", "inf"),
        2,
        "command line --optimizer.lr: optimizer.lr: input should be a finite number, got 'inf'",
        subprocess=True,
    ),
    case(
        "train-lr-1e30-diverges-keeps-previous-run",
        (TRAIN, P, "--optimizer.lr", "1e30"),
        1,
        "lower optimizer.lr",
    ),
    case(
        "train-out-of-range-ids-keeps-previous-run",
        (TRAIN, P, "--data.verify", "size", "--training.max_steps", "6"),  # a new run: verify alone resumes
        1,
        "vocab_size",
        setup=out_of_range_ids,
        unchanged=("out/**/*",),
    ),
    # Defect 2: a finished run rerun is a no-op; a corrupt last.pt is replaced.
    case("train-rerun-finished-is-a-no-op", (TRAIN, P), 0, "nothing left to train"),
    case(
        "evaluate-after-train-with-truncated-last-pt",
        (EVALUATE, P),
        0,
        "val_loss",
        setup=truncate_last,
        before=((TRAIN, P),),
        unchanged=(),
    ),
    # Defect 3: non-finite floats.
    case(
        "generate-temperature-inf",
        (GENERATE, P, "--generate.temperature", "inf"),
        2,
        "generate.temperature: input should be a finite number",
    ),
    case("check-lr-nan", (CHECK, "check", P, "--optimizer.lr", "nan"), 2, "optimizer.lr: input should be a finite"),
    case(
        "check-inf-in-file",
        (CHECK, "check", "inf.yaml"),
        2,
        "inf.yaml: training.grad_clip: input should be a finite",
        setup=params_variant("inf.yaml", setting("training", "grad_clip", float("inf"))),
    ),
    case("check-top-p-nan", (CHECK, "check", P, "--generate.top_p", ".nan"), 2, "generate.top_p: input should be"),
    # Defect 4: duplicate keys.
    case(
        "train-duplicate-lr",
        (TRAIN, "dup.yaml"),
        2,
        "optimizer.lr: duplicate key (lines",
        setup=params_text("dup.yaml", lambda text: text.replace("  lr: 0.003\n", "  lr: 0.003\n  lr: 0.01\n")),
    ),
    case(
        "check-duplicate-lr",
        (CHECK, "check", "dup.yaml"),
        2,
        "optimizer.lr: duplicate key (lines",
        setup=params_text("dup.yaml", lambda text: text.replace("  lr: 0.003\n", "  lr: 0.003\n  lr: 0.01\n")),
    ),
    case(
        "check-repeated-section",
        (CHECK, "check", "dup.yaml"),
        2,
        "dup.yaml: optimizer: duplicate key (lines",
        setup=params_text("dup.yaml", lambda text: text + "optimizer:\n  lr: 0.01\n"),
    ),
    case(
        "check-duplicate-in-included-file",
        (CHECK, "check", "top.yaml"),
        2,
        "base.yaml: eval.eval_iters: duplicate",
        setup=both(
            write_file("base.yaml", "eval:\n  eval_iters: 1\n  eval_iters: 2\n"),
            write_file("top.yaml", "__include__: [base.yaml, params.yaml]\n"),
        ),
    ),
    # Defect 5: meta.json checked against itself; val_fraction 0; directive values.
    case(
        "train-meta-vocab-size-too-small",
        (TRAIN, P),
        1,
        "vocab_size",
        setup=edit_meta(lambda meta: meta.__setitem__("vocab_size", 20)),
    ),
    case(
        "train-val-fraction-0",
        (TRAIN, P, "--data.val_fraction", "0", "--data.dataset", "tiny0"),
        2,
        "val_fraction",
        before=((TOKENIZE, P, "--data.val_fraction", "0", "--data.dataset", "tiny0"),),
        unchanged=RUNS,
    ),
    case(
        "check-inherit-maybe",
        (CHECK, "check", "top.yaml"),
        2,
        "top.yaml: optimizer._inherit: expected true (merge, the default) or false (replace), got 'maybe'",
        setup=write_file("top.yaml", "__include__: params.yaml\noptimizer:\n  _inherit: maybe\n  lr: 0.01\n"),
    ),
    case(
        "check-time-unknown-code",
        (CHECK, "check", "top.yaml"),
        2,
        "top.yaml: general.run_name: _time: unknown strftime code '%Q'",
        setup=write_file("top.yaml", "__include__: params.yaml\ngeneral:\n  run_name: _time:%Q\n"),
    ),
    case(
        "check-copy-without-path",
        (CHECK, "check", "top.yaml"),
        2,
        "top.yaml: general.run_name: _copy: expected a path such as /section/key",
        setup=write_file("top.yaml", "__include__: params.yaml\ngeneral:\n  run_name: '_copy:'\n"),
    ),
    # Tracebacks instead of one line.
    case("train-unknown-section-key", (TRAIN, P, "--foo.bar", "1"), 2, "command line --foo.bar: foo: unknown key"),
    case(
        "train-unknown-key-did-you-mean",
        (TRAIN, P, "--optimizer.lrr", "1"),
        2,
        "command line --optimizer.lrr: optimizer.lrr: unknown key; did you mean 'lr'?",
    ),
    case("train-flag-without-value", (TRAIN, P, "--optimizer.lr"), 2, "command line: --optimizer.lr needs a value"),
    case(
        "train-flag-without-value-before-flag",
        (TRAIN, P, "--optimizer.lr", "--training.max_steps", "2"),
        2,
        "--optimizer.lr needs a value",
    ),
    case("train-params-path-is-folder", (TRAIN, "data"), 2, "data: is a folder, expected a params YAML file"),
    case(
        "check-include-is-folder",
        (CHECK, "check", "top.yaml"),
        2,
        "top.yaml: __include__: data: is a folder",
        setup=write_file("top.yaml", "__include__: data\n"),
    ),
    case("evaluate-out-dir-read-only", (EVALUATE, P), 1, "writ", setup=read_only("out")),
    case("generate-out-dir-read-only", (GENERATE, P), 1, "writ", setup=read_only("out")),
    case(
        "tokenize-data-root-read-only",
        (TOKENIZE, P, "--data.dataset", "fresh"),
        1,
        "writ",
        setup=read_only("data"),
    ),
    case("evaluate-out-dir-is-a-file", (EVALUATE, P), 1, "OUT_DIR", env={"OUT_DIR": "corpus.txt"}),
    case("generate-out-dir-is-a-file", (GENERATE, P), 1, "OUT_DIR", env={"OUT_DIR": "corpus.txt"}),
    case("train-out-dir-is-a-file", (TRAIN, P), 1, "OUT_DIR", env={"OUT_DIR": "corpus.txt"}),
    case("tokenize-data-root-is-a-file", (TOKENIZE, P), 1, "DATA_ROOT", env={"DATA_ROOT": "corpus.txt"}),
    case("train-model-too-large-for-memory", (TRAIN, P, "--model.n_embd", "100000000"), 1, "parameters need about"),
    case(
        "train-component-raises-on-import",
        (TRAIN, P, "--model.module", "mypkg.broken:Options"),
        2,
        "model.module: importing 'mypkg.broken' raised RuntimeError: broken on purpose",
        setup=user_module("raise RuntimeError('broken on purpose')\n"),
        env={"PYTHONPATH": "."},
        subprocess=True,
    ),
    case(
        "check-component-syntax-error",
        (CHECK, "check", P, "--model.module", "mypkg.broken:Options"),
        2,
        "importing 'mypkg.broken' raised SyntaxError",
        setup=user_module("def (:\n"),
        env={"PYTHONPATH": "."},
        subprocess=True,
    ),
    case(
        "train-base-class-as-module",
        (TRAIN, P, "--model.module", "nanugpt.config.schema:ModelOptions"),
        2,
        "is a base class, not a component: it does not implement build",
    ),
    case(
        "check-optimizer-base-class",
        (CHECK, "check", P, "--optimizer.module", "nanugpt.config.schema.OptimizerOptions"),
        2,
        "is a base class, not a component",
    ),
    case(
        "generate-prompt-binary-file",
        (GENERATE, P, "--generate.prompt", "FILE:/bin/ls"),
        1,
        "generate.prompt: /bin/ls is not UTF-8 text",
    ),
    case(
        "generate-prompt-missing-file",
        (GENERATE, P, "--generate.prompt", "FILE:nope.txt"),
        1,
        "generate.prompt: cannot read nope.txt",
    ),
    case("generate-prompt-folder", (GENERATE, P, "--generate.prompt", "FILE:data"), 1, "generate.prompt: cannot read"),
    case(
        "train-invalid-meta-json",
        (TRAIN, P),
        1,
        "meta.json",
        setup=write_file(str(TOKEN_DIR / "meta.json"), "{not json"),
    ),
    case(
        "train-meta-vocab-size-not-an-integer",
        (TRAIN, P),
        1,
        "vocab_size",
        setup=edit_meta(lambda meta: meta.__setitem__("vocab_size", "many")),
    ),
    # Defect 6 and 7: the README's commands.
    case(
        "generate-readme-prompt-and-seed",
        (GENERATE, P, "--generate.prompt", "ROMEO:", "--generate.seed", "7"),
        0,
        "ROMEO:",
        unchanged=("data/**/*", "out/checkpoints/*", P),
    ),
    case(
        "tokenize-other-source-with-pinned-sha",
        (TOKENIZE, P, "--data.source", "other.txt", "--data.sha256", CORPUS_SHA),
        1,
        "--data.sha256 null",
        setup=write_file("other.txt", "another corpus\n" * 50),
    ),
    # Ordinary bad inputs, which already hold.
    case("check-missing-params-file", (CHECK, "check", "nope.yaml"), 2, "nope.yaml: file not found"),
    case("train-missing-params-file", (TRAIN, "nope.yaml"), 2, "nope.yaml: file not found"),
    case(
        "train-default-params-missing",
        (TRAIN,),
        2,
        "params.yaml: file not found",
        setup=lambda ws: (ws / P).rename(ws / "elsewhere.yaml"),
    ),
    case("use-unknown-preset", (CHECK, "use", "no_such_preset"), 2, "no preset 'no_such_preset'; presets:"),
    case("params-unknown-command", (CHECK, "frobnicate"), 2, "python -m pipeline.params check"),
    case(
        "check-unknown-key-in-file",
        (CHECK, "check", "bad.yaml"),
        2,
        "bad.yaml: training.max_step: unknown key; did you mean 'max_steps'?",
        setup=params_variant("bad.yaml", setting("training", "max_step", 3)),
    ),
    case(
        "check-unknown-section",
        (CHECK, "check", "bad.yaml"),
        2,
        "optimiser: unknown key; did you mean 'optimizer'?",
        setup=params_variant("bad.yaml", lambda tree: tree.__setitem__("optimiser", {"lr": 1})),
    ),
    case(
        "check-missing-section",
        (CHECK, "check", "bad.yaml"),
        2,
        "bad.yaml: training: required key is missing",
        setup=params_variant("bad.yaml", without("training")),
    ),
    case(
        "check-missing-module",
        (CHECK, "check", "bad.yaml"),
        2,
        "optimizer.module: required, one of",
        setup=params_variant("bad.yaml", lambda tree: tree["optimizer"].pop("module")),
    ),
    case(
        "train-wrong-type",
        (TRAIN, P, "--training.max_steps", "many"),
        2,
        "training.max_steps: input should be a valid integer",
    ),
    case("train-negative-lr", (TRAIN, P, "--optimizer.lr", "-1"), 2, "optimizer.lr: input should be greater than 0"),
    case("train-zero-steps", (TRAIN, P, "--training.max_steps", "0"), 2, "training.max_steps: input should be greater"),
    case("train-unknown-model-module", (TRAIN, P, "--model.module", "nanogtp"), 2, "did you mean 'nanogpt'?"),
    case(
        "train-unknown-optimizer-module",
        (TRAIN, P, "--optimizer.module", "adam"),
        2,
        "optimizer.module: unknown optimizer module 'adam'",
    ),
    case(
        "check-unimportable-module-path",
        (CHECK, "check", P, "--model.module", "no_such_pkg.models:Opts"),
        2,
        "cannot import 'no_such_pkg.models:Opts'",
    ),
    case(
        "check-module-not-a-subclass",
        (CHECK, "check", P, "--model.module", "nanugpt.optim.adamw:AdamWOptions"),
        2,
        "is not a subclass of nanugpt.config.schema.ModelOptions",
    ),
    case("check-bad-import-path", (CHECK, "check", P, "--model.module", "my-models:X"), 2, "is not an import path"),
    case(
        "check-device-type-literal",
        (CHECK, "check", P, "--general.device_type", "tpu"),
        2,
        "general.device_type: input should be 'auto', 'cpu' or 'cuda'",
    ),
    case("check-dtype-literal", (CHECK, "check", P, "--general.dtype", "fp8"), 2, "general.dtype: input should be"),
    case(
        "check-batch-not-a-multiple",
        (CHECK, "check", P, "--training.global_batch_size", "6"),
        2,
        "training.global_batch_size: must be a multiple of training.device_batch_size (4), got 6",
    ),
    case(
        "check-warmup-beyond-steps",
        (CHECK, "check", P, "--scheduler.warmup_steps", "10"),
        2,
        "scheduler.warmup_steps: must be <= training.max_steps (4), got 10",
    ),
    case(
        "check-embd-not-divisible",
        (CHECK, "check", P, "--model.n_embd", "33"),
        2,
        "model.n_embd: must be divisible by model.n_head (2), got 33",
    ),
    case(
        "check-keller-with-clipping",
        (CHECK, "check", P, "--scaler.module", "keller"),
        2,
        "training.grad_clip: must be 0 with scaler.module keller",
    ),
    case(
        "check-fewer-gpus-than-processes",
        (CHECK, "check", P, "--launch.nproc_per_node", "4", "--launch.gpus_per_node", "2"),
        2,
        "gpus_per_node (2) is fewer than",
    ),
    case(
        "check-top-p-above-1",
        (CHECK, "check", P, "--generate.top_p", "1.5"),
        2,
        "generate.top_p: input should be less than or equal to 1",
    ),
    case(
        "check-negative-temperature",
        (CHECK, "check", P, "--generate.temperature", "-1"),
        2,
        "generate.temperature: input should be greater than or equal to 0",
    ),
    case("check-zero-samples", (CHECK, "check", P, "--generate.num_samples", "0"), 2, "generate.num_samples: input"),
    case(
        "check-module-kwargs-not-a-mapping",
        (CHECK, "check", P, "--optimizer.module_kwargs", "[1]"),
        2,
        "optimizer.module_kwargs: expected a mapping, got [1]",
    ),
    case(
        "check-key-beside-and-in-module-kwargs",
        (CHECK, "check", P, "--optimizer.module_kwargs", "{lr: 0.1}"),
        2,
        "optimizer.lr: given both beside 'module' (0.003) and in module_kwargs (0.1); keep one",
    ),
    case(
        "check-dataset-name-pattern",
        (CHECK, "check", P, "--data.dataset", "a/b"),
        2,
        "data.dataset: string should match pattern",
    ),
    case(
        "check-invalid-yaml",
        (CHECK, "check", "bad.yaml"),
        2,
        "bad.yaml: invalid YAML:",
        setup=write_file("bad.yaml", "optimizer: [lr: 1\n"),
    ),
    case(
        "check-top-level-list",
        (CHECK, "check", "bad.yaml"),
        2,
        "bad.yaml: expected a mapping of sections at the top",
        setup=write_file("bad.yaml", "- optimizer\n- model\n"),
    ),
    case(
        "check-not-utf8",
        (CHECK, "check", "bad.yaml"),
        2,
        "bad.yaml: not UTF-8 text",
        setup=write_file("bad.yaml", b"general:\n  run_name: \xff\xfe\n"),
    ),
    case(
        "check-control-character",
        (CHECK, "check", "bad.yaml"),
        2,
        "bad.yaml: invalid YAML:",
        setup=write_file("bad.yaml", "general:\n  run_name: a\x1fb\n"),
    ),
    case(
        "check-python-tag-not-executed",
        (CHECK, "check", "bad.yaml"),
        2,
        "bad.yaml: invalid YAML:",
        setup=write_file("bad.yaml", "general: !!python/object/apply:os.system ['touch pwned']\n"),
    ),
    case(
        "check-include-cycle",
        (CHECK, "check", "a.yaml"),
        2,
        "__include__ cycle",
        setup=both(write_file("a.yaml", "__include__: b.yaml\n"), write_file("b.yaml", "__include__: a.yaml\n")),
    ),
    case(
        "check-missing-include",
        (CHECK, "check", "top.yaml"),
        2,
        "top.yaml: __include__: nope.yaml: file not found",
        setup=write_file("top.yaml", "__include__: nope.yaml\n"),
    ),
    case(
        "check-include-not-a-name",
        (CHECK, "check", "top.yaml"),
        2,
        "__include__: expected a file name or a list",
        setup=write_file("top.yaml", "__include__: {a: 1}\n"),
    ),
    case(
        "check-copy-nothing-there",
        (CHECK, "check", "top.yaml"),
        2,
        "general.run_name: _copy: nothing at '/nowhere'",
        setup=write_file("top.yaml", "__include__: params.yaml\ngeneral:\n  run_name: '_copy: /nowhere'\n"),
    ),
    case(
        "check-copy-cycle",
        (CHECK, "check", "top.yaml"),
        2,
        "_copy cycle",
        setup=write_file(
            "top.yaml",
            "__include__: params.yaml\ngeneral:\n  run_name: '_copy: /general/project_name'"
            "\n  project_name: '_copy: /general/run_name'\n",
        ),
    ),
    case(
        "check-unset-environment-variable",
        (CHECK, "check", P, "--data.source", "$NANUGPT_CATALOGUE_UNSET/x"),
        2,
        "data.source: environment variable $NANUGPT_CATALOGUE_UNSET is not set",
    ),
    case(
        "check-override-not-dotted",
        (CHECK, "check", P, "--lr", "1"),
        2,
        "command line: --lr: expected a dotted key such as --optimizer.lr",
    ),
    case(
        "train-override-not-a-flag", (TRAIN, P, "lr=1"), 2, "command line: expected '--section.key value', got 'lr=1'"
    ),
    case(
        "evaluate-no-checkpoint",
        (EVALUATE, P),
        1,
        "last.pt: no such checkpoint",
        setup=lambda ws: shutil.rmtree(ws / "out"),
        subprocess=True,
    ),
    case(
        "train-before-tokenize",
        (TRAIN, P, "--data.dataset", "untokenized"),
        1,
        "run the tokenize stage first",
        unchanged=RUNS,
    ),
    case(
        "train-resume-missing-checkpoint",
        (TRAIN, P, "--training.resume", "/no/such.pt"),
        1,
        "/no/such.pt: no such checkpoint",
    ),
    case("generate-prompt-outside-vocabulary", (GENERATE, P, "--generate.prompt", "QQQ"), 1, "generate.prompt:"),
    case(
        "tokenize-missing-source",
        (TOKENIZE, P, "--data.source", "nope.txt"),
        1,
        "data.source 'nope.txt': no such file or folder",
    ),
    case(
        "tokenize-source-folder-without-text",
        (TOKENIZE, P, "--data.source", "empty"),
        1,
        "holds no .txt files",
        setup=lambda ws: (ws / "empty").mkdir(),
    ),
    # Issue 30: nothing lost, nothing silent.
    case(
        "evaluate-flipped-byte-in-checkpoint-tensors",
        (EVALUATE, P),
        1,
        "last.pt: damaged: its sha256 differs from the one in last.pt.sha256",
        setup=flip_tensor_byte,
        unchanged=("out/metrics.json", "out/samples.txt", "data/**/*"),
    ),
    case(
        "train-resume-past-a-flipped-byte-falls-back",
        (TRAIN, P),
        0,
        "resumed from step 2",
        setup=flip_tensor_byte,
        unchanged=("data/**/*",),
    ),
    case(
        "generate-checkpoint-etc-passwd",
        (GENERATE, P, "--generate.checkpoint", "/etc/passwd"),
        1,
        "/etc/passwd: unreadable, truncated or corrupt",
        subprocess=True,
    ),
    case(
        "generate-checkpoint-text-file",
        (GENERATE, P, "--generate.checkpoint", "corpus.txt"),
        1,
        "corpus.txt: unreadable, truncated or corrupt",
    ),
    case(
        "generate-a-billion-samples",
        (GENERATE, P, "--generate.num_samples", "1000000000"),
        1,
        "lower generate.num_samples or generate.max_new_tokens",
    ),
    case(
        "train-wandb-project-with-slash",
        (TRAIN, P, "--logging.wandb", "true", "--general.project_name", "a/b"),
        2,
        "general.project_name: W&B refuses the project name 'a/b'",
    ),
    case(
        "check-secret-in-run-name",
        (CHECK, "check", "secret.yaml"),
        2,
        "$WANDB_API_KEY looks like a secret",
        setup=params_variant("secret.yaml", setting("general", "run_name", "run-$WANDB_API_KEY")),
        env={"WANDB_API_KEY": "not-a-real-key"},
    ),
    case(
        "check-yaml-alias-bomb",
        (CHECK, "check", "bomb.yaml"),
        2,
        "values once its aliases (*name) are expanded",
        setup=write_file(
            "bomb.yaml",
            "\n".join(
                ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
            ),
        ),
    ),
    case(
        "train-on-tokens-of-an-older-corpus",
        (TRAIN, P),
        1,
        "were made from another corpus",
        setup=stale_tokens,
    ),
    case(
        "train-meta-json-edited-by-hand",
        (TRAIN, P),
        1,
        "data/tiny/char/meta.json: damaged:",
        setup=edit_meta(lambda meta: meta.__setitem__("source", "elsewhere"), checksum=False),
    ),
    case(
        "train-resume-with-dvclive-a-file",
        (TRAIN, P),
        1,
        "dvclive: a file stands where the metrics folder should be",
        setup=both(interrupted_at_step_2, replace_with_file("out/dvclive")),
        unchanged=("out/checkpoints/*.pt", "data/**/*"),  # last.json names the step resumed from
    ),
    case(
        "train-plots-linked-outside-out-dir",
        (TRAIN, P),
        1,
        "plots is a symbolic link to",
        setup=link_outside("out/plots"),
    ),
    # Issue 34: long runs.
    case(
        "check-spike-rollback-without-checkpoints",
        (CHECK, "check", P, "--training.spike.action", "rollback", "--training.checkpoint_every", "0"),
        2,
        "training.spike.action: 'rollback' needs checkpoints to roll back to",
    ),
    case(
        "check-spike-action-off-unquoted",
        (CHECK, "check", P, "--training.spike.action", "off"),
        2,
        "write none to switch the check off (YAML reads off as false)",
    ),
    case(
        "check-tasks-every-without-tasks",
        (CHECK, "check", P, "--eval.tasks_every", "2"),
        2,
        "eval.tasks_every: is 2 but eval.tasks is empty",
    ),
    case(
        "check-profile-window-past-the-end",
        (CHECK, "check", P, "--training.profile.enabled", "true", "--training.profile.start_step", "9"),
        2,
        "training.profile.start_step: must be below training.max_steps (4)",
    ),
]


def snapshot(ws: Path, globs: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file matching ``globs`` under ``ws``, but the stages' logs (``out/logs/``): every command
    appends its lines there by design, failed ones too."""
    logs = ws / "out" / "logs"
    files = {p for pattern in globs for p in ws.glob(pattern) if p.is_file() and logs not in p.parents}
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def in_process(ws: Path, argv: tuple[str, ...], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """``python -m <module> <args>``'s work, done by the module's ``main`` in this process, in ``ws``."""
    module, *args = argv
    with monkeypatch.context() as patch:
        patch.chdir(ws)
        for name in RUN_ENV:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        code, stdout, stderr = call_main(MAINS[module], args)
    return Outcome(code, stdout, stderr, [])


def in_subprocess(ws: Path, argv: tuple[str, ...], env: dict[str, str]) -> Outcome:
    """``python -m <module> <args>`` as a fresh interpreter in ``ws``."""
    environment = {k: v for k, v in os.environ.items() if k not in RUN_ENV}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    result = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ws,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Outcome(result.returncode, result.stdout, result.stderr, [])


def run_case(item: Case, ws: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """Set the case up in ``ws`` (a copy of the workspace), run its command, and list the files it changed."""

    def command(argv: tuple[str, ...]) -> Outcome:
        if item.subprocess:
            return in_subprocess(ws, argv, item.env)
        return in_process(ws, argv, item.env, monkeypatch)

    try:
        if item.setup:
            item.setup(ws)
        for argv in item.before:
            command(argv)
        before = snapshot(ws, item.unchanged)
        assert before or not item.unchanged, f"{item.name}: no file matches {item.unchanged}"
        outcome = command(item.argv)
        after = snapshot(ws, item.unchanged)
        outcome.changed = sorted(name for name in before if after.get(name) != before[name])
        return outcome
    finally:
        for path in [ws, *ws.rglob("*")]:  # read-only setups: let pytest clean up
            if path.is_dir() and not path.is_symlink() and not path.stat().st_mode & 0o222:
                unlock_folder(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenized corpus and a finished 4-step run with metrics and samples, shared by every case."""
    ws = tmp_path_factory.mktemp("catalogue_workspace")
    (ws / "corpus.txt").write_text(CORPUS)
    write_params(ws / P, base_params())
    with pytest.MonkeyPatch.context() as monkeypatch:
        for module in (TOKENIZE, TRAIN, EVALUATE, GENERATE):
            outcome = in_process(ws, (module, P), {}, monkeypatch)
            assert outcome.code == 0, outcome.stdout + outcome.stderr
    return ws


@pytest.mark.parametrize("item", CASES)
def test_error_catalogue(item: Case, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    outcome = run_case(item, ws, monkeypatch)
    output = outcome.stdout + outcome.stderr
    assert "Traceback" not in output, output
    assert outcome.code == item.code, f"exit {outcome.code}, expected {item.code}: {output}"
    assert item.phrase in output, output
    assert not outcome.changed, f"changed: {outcome.changed}"


def test_catalogue_names_are_unique() -> None:
    names = [param.values[0].name for param in CASES]
    assert len(names) == len(set(names)) and len(names) >= 60


def test_real_commands_cover_both_exit_codes() -> None:
    codes = {param.values[0].code for param in CASES if param.values[0].subprocess}
    assert {1, 2} <= codes
