"""Params tools for the pipeline.

    python -m pipeline.params use <preset>       # params/<preset>.yaml -> explicit params.yaml
    python -m pipeline.params check [FILE]       # validate (exit 2 with one line per problem)
    python -m pipeline.params schema [OUT.json]  # JSON schema of every section and component
    python -m pipeline.params reference [OUT.md] # Markdown table of every key (docs/params.md)
    python -m pipeline.params import-nanugpt NANUGPT.yaml [--tokenize TOKENIZE.yaml] [-o OUT.yaml]
                                                 # a nanuGPT config -> an explicit params file (docs/nanugpt.md);
                                                 # exit 1 listing every key that cannot be mapped

``params.yaml`` must be explicit because DVC only sees literal keys: ``use``
resolves ``__include__``, ``_copy`` and the rest and writes every key.
"""

from __future__ import annotations

import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from nanugpt.config import registry
from nanugpt.config.params import ParamsError
from nanugpt.config.schema import KIND_BASES
from nanugpt.files.atomic import write_text
from pipeline.cli import run_command
from pipeline.nanugpt_import import import_nanugpt
from pipeline.schema import PipelineParams, load

PRESET_DIR = Path(__file__).resolve().parent.parent / "params"
HEADER = (
    "# The active experiment, fully explicit (DVC tracks these literal keys).\n"
    "# Written by `python -m pipeline.params {command} {preset}`; edit it or run `dvc exp run -S key=value`.\n"
)
REFERENCE_NOTE = (
    "Every key of the params file, generated from the schema by `python -m pipeline.params reference docs/params.md`"
    " (tests/unit/pipeline/test_stage_table.py fails when this file is stale)."
)


def preset_path(name: str) -> Path:
    """``params/<name>.yaml``, with the list of presets in the error when it does not exist."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise ParamsError([f"no preset {name!r}; presets: {names}"])
    return path


def explicit_yaml(params: PipelineParams, preset: str, command: str = "use") -> str:
    """The YAML text of ``params`` with every key written out."""
    return HEADER.format(command=command, preset=preset) + yaml.safe_dump(params.to_dict(), sort_keys=False, width=120)


def use(preset: str, target: Path = Path("params.yaml")) -> PipelineParams:
    """Write the explicit form of a preset to ``target``."""
    params = load(preset_path(preset))
    write_text(target, explicit_yaml(params, preset))
    return params


def component_classes() -> dict[str, dict[str, type[BaseModel]]]:
    """Every registered component's options class, by kind and short name."""
    return {kind: {name: registry.resolve(kind, name) for name in names} for kind, names in registry.BUILTIN.items()}


def json_schema() -> dict[str, Any]:
    """JSON schema of the params file: fixed sections, plus each component's options."""
    return {
        "params": PipelineParams.model_json_schema(),
        "components": {
            kind: {name: cls.model_json_schema() for name, cls in classes.items()}
            for kind, classes in component_classes().items()
        },
    }


def _type_name(annotation: Any) -> str:
    """A short, table-safe name of a field type: ``int or null``, ``'cpu', 'cuda'``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(repr(a) for a in args)
    if args and type(None) in args:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    return str(annotation).replace("typing.", "") if args else getattr(annotation, "__name__", str(annotation))


def _rows(prefix: str, model: type[BaseModel], skip: Sequence[str] = ()) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            rows += _rows(f"{prefix}.{name}", field.annotation)
            continue
        type_name = _type_name(field.annotation)
        default = "required" if field.is_required() else f"`{json.dumps(field.get_default(call_default_factory=True))}`"
        rows.append(f"| `{prefix}.{name}` | {type_name} | {default} | {field.description or ''} |")
    return rows


def reference() -> str:
    """docs/params.md: Markdown tables of every key, generated from the schema so the docs cannot drift from it."""
    lines = ["# Params reference", "", REFERENCE_NOTE, ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for section, field in PipelineParams.model_fields.items():
        if section in KIND_BASES:
            continue
        lines += _rows(section, field.annotation)  # type: ignore[arg-type]
    lines += ["", "Components (`module:` picks one; its options sit beside it):", ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for kind, classes in component_classes().items():
        for name, cls in classes.items():
            lines.append(f"| **`{kind}.module: {name}`** | | | {(cls.__doc__ or '').strip().split(chr(10))[0]} |")
            lines += _rows(kind, cls, skip=("module",))
    return "\n".join(lines) + "\n"


def import_command(args: Sequence[str]) -> int:
    """``import-nanugpt FILE [--tokenize FILE] [-o OUT]``: print the notes, list the refused keys on stderr, write
    the params file (to OUT, else stdout) when it validates; exit 0 when every key mapped, 1 otherwise."""
    args = list(args)
    options = {flag: args.pop(args.index(flag) + 1) for flag in ("--tokenize", "-o") if flag in args[:-1]}
    args = [a for a in args if a not in ("--tokenize", "-o")]
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    tokenize = options.get("--tokenize")
    result = import_nanugpt(Path(args[0]), Path(tokenize) if tokenize else None)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    for line in result.refused:
        print(f"not mapped: {line}", file=sys.stderr)
    if result.params is not None:
        header = args[0] + (f" --tokenize {tokenize}" if tokenize else "")
        text = explicit_yaml(result.params, header, command="import-nanugpt")
        if result.refused:
            text = "".join(f"# not mapped: {line}\n" for line in result.refused) + text
        write_text(Path(options["-o"]), text) if "-o" in options else print(text, end="")
    return 1 if result.refused else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one params tool (see the module doc); exit 2 with one line per problem for invalid params."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]

    def body() -> int:
        if command == "use" and len(rest) == 1:
            use(rest[0])
            print(f"wrote params.yaml from {preset_path(rest[0])}")
        elif command == "check":
            load(rest[0] if rest else "params.yaml", rest[1:])
            print("ok")
        elif command == "schema":
            text = json.dumps(json_schema(), indent=2) + "\n"
            write_text(rest[0], text) if rest else print(text, end="")
        elif command == "import-nanugpt":
            return import_command(rest)
        elif command == "reference":
            write_text(rest[0], reference()) if rest else print(reference(), end="")
        else:
            print(__doc__.strip(), file=sys.stderr)
            return 2
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
