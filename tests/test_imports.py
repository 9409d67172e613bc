"""DESIGN.md's import rules, read from the source: the library imports no orchestration, the pipeline no stage."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# package -> top-level packages its modules must never import (DESIGN.md, "Import rules"). The components
# (models, data, tokenizers, ...) live in nanugpt, so "components import no stage" is nanugpt's rule.
FORBIDDEN = {
    "nanugpt": {"pipeline", "stages"},
    "pipeline": {"stages"},
}


def imported_packages(source: str, module: str) -> set[str]:
    """Top-level packages imported anywhere in ``source`` (also inside functions), relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x: relative to the module's own package
                found.add(module.split(".")[0])
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


def violations(root: Path, forbidden: dict[str, set[str]]) -> list[str]:
    """``file imports package`` for every forbidden arrow in the packages under ``root``."""
    problems = []
    for package, banned in forbidden.items():
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for name in sorted(imported_packages(path.read_text(), module) & banned):
                problems.append(f"{path.relative_to(root)} imports {name}")
    return problems


def test_no_module_imports_across_a_forbidden_arrow() -> None:
    assert violations(REPO, FORBIDDEN) == []


def test_the_rule_catches_an_import_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "launch.py").write_text("def main():\n    from stages import train\n")
    (tmp_path / "nanugpt").mkdir()
    (tmp_path / "nanugpt" / "train.py").write_text("import pipeline.paths\nfrom . import data\n")
    assert violations(tmp_path, FORBIDDEN) == ["nanugpt/train.py imports pipeline", "pipeline/launch.py imports stages"]


def test_the_launcher_imports_no_torch() -> None:
    code = "import pipeline.launch, sys; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
