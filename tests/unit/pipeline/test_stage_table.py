"""dvc.yaml and Snakefile declare the same stages: names, commands, code, params and artifacts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import REPO, copy_worktree

from pipeline.stages import STAGES, code_files, render

DVC_DATA_DIR = "data/${data.dataset}/${tokenizer.module}"


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def names(entries: list) -> list[str]:
    """Paths of a dvc.yaml list whose items are strings or one-key mappings with options."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def test_stage_names_are_the_six_in_both() -> None:
    assert list(dvc_stages()) == ["source", "tokenize", "train", "evaluate", "generate", "export"] == list(STAGES)


def test_dvc_yaml_matches_the_stage_table() -> None:
    for name, declared in dvc_stages().items():
        stage = STAGES[name]
        rendered = lambda templates: [render(t, DVC_DATA_DIR, "out") for t in templates]  # noqa: E731
        assert declared["cmd"] == stage.command(), name
        assert names(declared.get("deps", [])) == rendered(stage.deps) + list(stage.code), name
        assert declared.get("params", []) == list(stage.params), name
        outs = {
            path: (entry[path] if isinstance(entry, dict) else {}) or {}
            for entry in declared.get("outs", [])
            for path in names([entry])
        }
        assert list(outs) == rendered(stage.outs), name
        # DVC's run-cache records a stage only if none of its plain outputs is uncached and none is persist
        # (pipeline/publish.py): uncached files are metrics or plots
        assert not [p for p in outs if outs[p].get("cache") is False or outs[p].get("persist")], name
        plots = declared.get("plots", [])
        assert names(plots) == rendered(stage.plots), name
        assert all(entry[path].get("cache") is False for entry in plots for path in names([entry])), name
        assert names(declared.get("metrics", [])) == rendered(stage.metrics), name
        assert declared.get("always_changed", False) == stage.always_changed, name


def test_code_deps_exist_and_cover_every_module_a_stage_imports() -> None:
    infrastructure = {
        "nanugpt/config/params.py",
        "nanugpt/config/loader.py",
        "nanugpt/config/schema.py",
        "nanugpt/config/registry.py",
        "nanugpt/errors.py",
        "nanugpt/files/atomic.py",
        "nanugpt/files/checksum.py",
        "nanugpt/files/folder_lock.py",
        "nanugpt/files/hashing.py",
        "nanugpt/metrics/sinks.py",
        "nanugpt/train/run_info.py",
        "pipeline/console_log.py",  # where console lines are copied, not what a stage computes
        "pipeline/cli.py",
        "pipeline/interrupt.py",  # how a command stops on Ctrl-C, not what it computes
        "pipeline/paths.py",
        "pipeline/schema.py",
    }
    imported = dict(zip(STAGES, modules_each_imports([stage.module for stage in STAGES.values()]), strict=True))
    for name, stage in STAGES.items():
        files = code_files(stage)
        assert all((REPO / f).exists() for f in files), name
        ours = {f for f in imported[name] if Path(f).name != "__init__.py"}  # package indexes: test below
        assert ours - infrastructure <= set(files), (name, ours - infrastructure - set(files))


OUR_PACKAGES = ("nanugpt", "pipeline", "stages")
# In one fresh Python, for each module: forget every module of ours (third-party ones stay loaded, which keeps
# this quick), import it, and print the files of ours that importing it loaded, on one line.
IMPORTED_FILES = f"""
import importlib, sys
ours = lambda name: name.split(".")[0] in {OUR_PACKAGES!r}
for module in sys.argv[1:]:
    for name in [name for name in sys.modules if ours(name)]:
        del sys.modules[name]
    importlib.import_module(module)
    print(" ".join(m.__file__ for n, m in list(sys.modules.items()) if ours(n) and getattr(m, "__file__", None)))
"""


def modules_each_imports(modules: list[str]) -> list[set[str]]:
    """For each module, the files of ours (relative to the repository) that importing it on its own loads."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_FILES, *modules], cwd=REPO, capture_output=True, text=True, check=True
    )
    return [{str(Path(p).relative_to(REPO)) for p in line.split()} for line in result.stdout.splitlines()]


def test_package_indexes_hold_no_code() -> None:
    """A package's ``__init__.py`` is its index (a docstring), so editing one re-runs no stage. The two packages
    whose modules are commands also install the Ctrl-C handler there (``pipeline.interrupt``): it must come
    before a command's own imports, and it changes no number a stage computes."""
    handler = ["from pipeline.interrupt import install_when_run", "install_when_run()"]
    for init in sorted(REPO.glob("*/**/__init__.py")):
        if ".venv" in init.parts:
            continue
        body = ast.parse(init.read_text()).body
        if init in (REPO / "pipeline/__init__.py", REPO / "stages/__init__.py"):
            assert [ast.unparse(node) for node in body[1:]] == handler, init
            continue
        code = [
            node for node in body[1:] if not (isinstance(node, ast.Assign) and init == REPO / "nanugpt/__init__.py")
        ]
        assert not code and (not body or isinstance(body[0], ast.Expr)), f"{init.relative_to(REPO)} holds code"


def test_snakemake_runs_the_same_commands(tmp_path: Path) -> None:
    copy_worktree(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "-j", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    printed = result.stdout + result.stderr
    for name, stage in STAGES.items():
        assert f"rule {name}:" in printed
        assert f"{stage.command()} > out/logs/{name}.log 2>&1" in printed, name


def test_params_reference_is_current() -> None:
    from pipeline.params import reference

    current = (REPO / "docs" / "params.md").read_text()
    assert current == reference(), "regenerate with: python -m pipeline.params reference docs/params.md"
