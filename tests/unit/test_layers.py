"""The layer rule of docs/architecture.md, read from the source: a module imports only from its own layer or below,
and no two modules import each other, even for type checking only.

Imports are read with ``ast`` anywhere in a file: at the top, inside functions, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers import REPO

# Lowest first. A unit is a package (or the module ``nanugpt.errors``); a module belongs to the longest unit that
# prefixes its dotted name, and may import the units of its own layer and of the layers before it.
LAYERS: list[tuple[str, ...]] = [
    ("nanugpt", "nanugpt.errors"),
    ("nanugpt.files",),
    ("nanugpt.config", "nanugpt.distributed", "nanugpt.ops"),
    ("nanugpt.data", "nanugpt.models"),
    ("nanugpt.optim",),
    ("nanugpt.checkpoint", "nanugpt.metrics"),
    ("nanugpt.eval", "nanugpt.inference"),
    ("nanugpt.train",),
    ("pipeline",),
    ("stages",),
]
LAYER_OF = {unit: index for index, units in enumerate(LAYERS) for unit in units}
PACKAGES = ("nanugpt", "pipeline", "stages")


def module_name(root: Path, path: Path) -> str:
    """``nanugpt.data.tokenize`` for ``root/nanugpt/data/tokenize.py``; a package's ``__init__`` is the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules(root: Path) -> dict[str, Path]:
    """Every module of our packages under ``root``, by dotted name."""
    return {module_name(root, path): path for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules of ours that ``path`` (module ``module``) imports anywhere, relative imports resolved; for
    ``from package import name`` the module ``package.name`` where there is one."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target.split(".")[0] in PACKAGES}
    return found


def unit_of(module: str) -> str:
    """The layer unit a dotted module name belongs to (the longest prefix in ``LAYER_OF``)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYER_OF:
            return ".".join(parts[:end])
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports."""
    modules = our_modules(root)
    return {name: imports_of(path, name, set(modules)) - {name} for name, path in modules.items()}


def upward_imports(root: Path) -> list[str]:
    """``module imports target`` for every import of a module from a higher layer."""
    return [
        f"{module} imports {target}"
        for module, targets in import_graph(root).items()
        for target in sorted(targets)
        if LAYER_OF[unit_of(target)] > LAYER_OF[unit_of(module)]
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_goes_to_the_same_layer_or_below() -> None:
    assert upward_imports(REPO) == []


def test_every_package_has_a_layer() -> None:
    for module in our_modules(REPO):
        unit_of(module)


def test_no_import_cycle_even_for_type_checking() -> None:
    assert cycles(import_graph(REPO)) == []


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_an_upward_import_inside_a_function_is_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "nanugpt/files/atomic.py": "def write():\n    from nanugpt.train import trainer\n",
            "nanugpt/train/trainer.py": "from ..files import atomic\n",
            "pipeline/launch.py": "from stages import train\n",
            "stages/train.py": "import pipeline.launch\n",
        },
    )
    assert upward_imports(root) == [
        "nanugpt.files.atomic imports nanugpt.train.trainer",
        "pipeline.launch imports stages.train",
    ]


def test_a_type_checking_cycle_is_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "nanugpt/config/schema.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from nanugpt.config.params import Params\n",
            "nanugpt/config/params.py": "from nanugpt.config import schema\n",
        },
    )
    assert cycles(import_graph(root)) == [["nanugpt.config.params", "nanugpt.config.schema"]]


def test_the_launcher_imports_no_torch() -> None:
    code = "import pipeline.launch, sys; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_no_stage_imports_fsdp_dtensor_or_dcp_before_a_run_shards() -> None:
    """Each of them takes about as long to import as torch: a stage that never shards does without them."""
    heavy = ("torch.distributed.fsdp", "torch.distributed.tensor", "torch.distributed.checkpoint")
    stages = "stages.train, stages.evaluate, stages.generate, stages.export"
    code = f"import sys, {stages}; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
