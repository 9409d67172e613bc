"""Reading a params YAML file into a plain dict, with nanuGPT's authoring directives.

Directives, applied in this order:

* ``a.yaml;b.yaml`` as the file name: the files are loaded in order (each
  with its own includes) and deep-merged, later wins, as nanuGPT stacks an
  overlay onto a config (``"train.yaml;overlays/lr_range_test.yaml"``).
* ``__include__: base.yaml`` (or a list): the named files, relative to the
  including file, are loaded first and deep-merged in order; the including
  file is merged on top (later wins).
* ``_inherit: false`` inside a mapping: that mapping replaces the inherited
  one instead of being merged into it (``true``, the default, merges; any
  other value is an error).
* ``--section.key value`` command-line overrides. The value is parsed as YAML
  (``[1, 2]`` is a list, ``null`` is None) unless the caller's
  ``parse_override`` says otherwise: the params loader keeps the text the
  user typed for keys the schema types as strings. A value that starts
  with ``--`` is written ``--section.key=--value``.
* ``_copy: /section/key`` as a string value is replaced by the value found at
  that path; as a key of a mapping, the copied mapping is merged under the
  mapping's other keys. Paths without a leading ``/`` are relative to the
  mapping holding the directive; ``..`` goes up one level.
* ``_env:`` at the top, a mapping of ``NAME: value``: each value (expanded
  itself) is set as the environment variable ``NAME`` before the other keys
  expand, so they can use ``$NAME``; the section is then removed.
* ``$VAR`` / ``${VAR}`` in strings expand from the environment (``$$`` is a
  literal ``$``); an unset variable is an error. Nothing is run by a shell.
  A variable whose name looks like a secret (``SECRET_NAMES``, or the
  comma-separated patterns of ``NANUGPT_SECRET_NAMES``) is refused: the
  resolved params are written into checkpoints, ``run_info.json`` and every
  logger's params, so a secret stays in the environment only.
* ``_time:FORMAT`` as a string value becomes the run's start time formatted
  with strftime (default ``%Y%m%d-%H%M%S``; only the codes of ``TIME_CODES``).
  The time is fixed once per run through the ``NANUGPT_RUN_TIME`` environment
  variable, so every rank of a distributed run sees the same stamp.

Files are read with PyYAML's safe loader only. A key given twice in one
mapping (a repeated section too) is an error naming both lines.

Every problem is one line: ``<file>: <dotted key>: <message>`` for a key of a
file, ``<file>: <message>`` for the file as a whole, and ``command line:
<message>`` for a malformed override.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

RUN_TIME_ENV = "NANUGPT_RUN_TIME"
_ENV_PATTERN = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
DEFAULT_TIME_FORMAT = "%Y%m%d-%H%M%S"
SECRET_NAMES = ("*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*CREDENTIAL*")  # fnmatch patterns, case-blind
SECRET_NAMES_ENV = "NANUGPT_SECRET_NAMES"
MAX_FILE_BYTES = 1 << 20  # a params file: a few KB in practice
MAX_NODES = 100_000  # values of one file with its YAML aliases expanded
# strftime codes that mean the same on every platform (C99 plus ISO week dates); others vary or pass through.
TIME_CODES = "aAbBcdGHIjmMpSuUVwWxXyYzZ%"
_TIME_CODE = re.compile(r"%(.?)")
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines() splits on
# (tree so far, dotted key, text typed) -> the value to set
OverrideParser = Callable[[dict[str, Any], str, str], Any]


class ConfigError(ValueError):
    """A params file that cannot be read: every problem, one line each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = [_one_line(problem) for problem in problems]
        super().__init__("\n".join(self.problems))


def _one_line(problem: str) -> str:
    """A problem as one line: a line break inside it (a key or path that holds one) is written escaped."""
    return _LINE_BREAKS.sub(lambda match: repr(match.group(0))[1:-1], problem)


def load_yaml_tree(
    path: str | Path, overrides: Sequence[str] = (), parse_override: OverrideParser | None = None
) -> dict[str, Any]:
    """Load ``path`` with all directives resolved; return a plain nested dict.

    ``parse_override(tree, dotted, text)`` turns an override's text into its value (default: YAML).
    """
    tree = load_unexpanded(path, overrides, parse_override)
    problems: list[str] = []
    _set_environment(tree.pop("_env", {}), str(path), problems)
    tree = _expand_strings(tree, str(path), problems, key="")
    if problems:
        raise ConfigError(problems)
    return tree


def load_unexpanded(
    path: str | Path, overrides: Sequence[str] = (), parse_override: OverrideParser | None = None
) -> dict[str, Any]:
    """Load ``path`` with ``__include__``, ``_inherit``, overrides and ``_copy`` resolved, but strings as written.

    ``$VAR`` and ``_time:`` stay as they are: what a tool that translates a file (not runs it) reads.
    ``module`` overrides are applied first, so ``parse_override`` sees the component a later key belongs to.
    """
    pairs = split_overrides(overrides)
    tree: dict[str, Any] = {}
    for part in str(path).split(";"):
        tree = deep_merge(tree, _load_with_includes(Path(part.strip()), stack=()))
    tree = _strip_inherit(tree)
    for dotted, text in sorted(pairs.items(), key=lambda item: not item[0].endswith(".module")):
        value = parse_override(tree, dotted, text) if parse_override else parse_value(text)
        set_dotted(tree, dotted, value)
    problems: list[str] = []
    tree = _resolve_copies(tree, str(path), problems)
    if problems:
        raise ConfigError(problems)
    return tree


def split_overrides(argv: Sequence[str]) -> dict[str, str]:
    """Turn ``['--a.b', '1', '--c.d=x']`` into ``{'a.b': '1', 'c.d': 'x'}``: dotted keys and the text typed."""
    result: dict[str, str] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise ConfigError([f"command line: expected '--section.key value', got {arg!r}"])
        key, eq, text = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise ConfigError([f"command line: --{key} needs a value, as in --{key} VALUE (null for none)"])
            text = items[i + 1]
            i += 1
        parts = key.split(".")
        if len(parts) < 2 or not all(part.strip() for part in parts):
            raise ConfigError([f"command line: --{key}: expected a dotted key such as --optimizer.lr"])
        result[key] = text
        i += 1
    return result


def parse_value(text: str) -> Any:
    """An override's text as YAML (``3e-4`` a float, ``[1, 2]`` a list, ``null`` None); text that is not YAML stays."""
    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """Turn ``['--a.b', '1', '--c.d=x']`` into ``{'a.b': 1, 'c.d': 'x'}``, every value parsed as YAML."""
    return {key: parse_value(text) for key, text in split_overrides(argv).items()}


def get_dotted(tree: Any, dotted: str) -> Any:
    """``tree['a']['b']`` for ``dotted == 'a.b'``; None where a part of the path is missing."""
    node = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": 1}`` for ``{"a": {"b": 1}}``; lists and scalars are leaves."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted == 'a.b'``, creating mappings on the way."""
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` into a copy of ``base``; mappings merge unless ``_inherit: false``."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict):
            inherit = value.get("_inherit", True)
            value = {k: v for k, v in value.items() if k != "_inherit"}
            if inherit is not False and isinstance(result.get(key), dict):
                result[key] = deep_merge(result[key], value)
                continue
        result[key] = copy.deepcopy(value)
    return result


def _strip_inherit(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_inherit(v) for k, v in node.items() if k != "_inherit"}
    if isinstance(node, list):
        return [_strip_inherit(v) for v in node]
    return node


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError([f"{path}: is a folder, expected a params YAML file"])
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError([f"{path}: {size:,} bytes; a params file may have at most {MAX_FILE_BYTES:,}"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        data = _construct_checked(text, path)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {' '.join(str(exc).split())}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: invalid YAML: nested too deeply"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of sections at the top, got {type(data).__name__}"])
    problems = []
    _check_inherit(data, (), path, problems)
    if problems:
        raise ConfigError(problems)
    return data


def _construct_checked(text: str, path: Path) -> Any:
    """The YAML document of ``text`` (safe tags only), refused when a mapping repeats a key."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and expanded_size(node, MAX_NODES) > MAX_NODES:
            raise ConfigError(
                [f"{path}: more than {MAX_NODES:,} values once its aliases (*name) are expanded: not a params file"]
            )
        problems: list[str] = []
        _find_duplicate_keys(node, (), path, problems, seen=set())
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def expanded_size(node: yaml.Node, limit: int) -> int:
    """How many nodes ``node`` holds with every alias expanded, counted up to ``limit`` + 1 at most: a few aliases
    of aliases expand to billions of values ("billion laughs"), so the count stops past the limit."""
    count, stack = 0, [node]
    while stack and count <= limit:
        current = stack.pop()
        count += 1
        if isinstance(current, yaml.MappingNode):
            stack.extend(child for pair in current.value for child in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return count


def _find_duplicate_keys(
    node: yaml.Node | None, at: tuple[str, ...], path: Path, problems: list[str], seen: set[int]
) -> None:
    """Report every key written twice in one mapping, with both lines (PyYAML keeps the last silently)."""
    if node is None or id(node) in seen:  # an alias points at a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key != "<<":
                line = key_node.start_mark.line + 1
                if key in lines:
                    dotted = ".".join((*at, key))
                    problems.append(f"{path}: {dotted}: duplicate key (lines {lines[key]} and {line}); keep one")
                else:
                    lines[key] = line
            _find_duplicate_keys(value_node, (*at, key or "?"), path, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _find_duplicate_keys(
                item, (*at[:-1], f"{at[-1]}[{index}]") if at else (f"[{index}]",), path, problems, seen
            )


def _check_inherit(node: Any, at: tuple[str, ...], path: Path, problems: list[str]) -> None:
    """``_inherit`` takes true or false only (``maybe`` would silently mean true)."""
    if isinstance(node, dict):
        if "_inherit" in node and not isinstance(node["_inherit"], bool):
            dotted = ".".join((*at, "_inherit"))
            problems.append(
                f"{path}: {dotted}: expected true (merge, the default) or false (replace), got {node['_inherit']!r}"
            )
        for key, value in node.items():
            _check_inherit(value, (*at, str(key)), path, problems)
    elif isinstance(node, list):
        for value in node:
            _check_inherit(value, at, path, problems)


def _load_with_includes(path: Path, stack: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError([f"{path}: __include__ cycle: {chain}"])
    data = _read_yaml(path)
    includes = data.pop("__include__", None)
    if includes is None:
        return data  # its _inherit markers apply when it is merged onto what precedes it, then go
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError([f"{path}: __include__: expected a file name or a list of file names, got {includes!r}"])
    merged: dict[str, Any] = {}
    for include in includes:
        included = path.parent / include
        if not included.is_file():
            what = "is a folder, expected a params YAML file" if included.is_dir() else "file not found"
            raise ConfigError([f"{path}: __include__: {included}: {what}"])
        merged = deep_merge(merged, _load_with_includes(included, (*stack, resolved)))
    return deep_merge(merged, data)


def _lookup(root: dict[str, Any], here: tuple[str, ...], target: str) -> tuple[tuple[str, ...], Any]:
    """Find the value at ``target`` (absolute '/a/b' or relative to ``here``)."""
    parts: list[str] = [] if target.startswith("/") else list(here)
    for part in target.strip().split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise KeyError(target)
            parts.pop()
        else:
            parts.append(part)
    node: Any = root
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            raise KeyError(target)
        node = node[part]
    return tuple(parts), node


def _copy_target(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("_copy:"):
        return value[len("_copy:") :].strip()
    return None


def _resolve_copies(root: dict[str, Any], source: str, problems: list[str]) -> dict[str, Any]:
    """Replace every ``_copy`` directive with the value it points at."""
    resolving: list[tuple[str, ...]] = []

    def resolve_path(path: tuple[str, ...]) -> Any:
        _, node = _lookup(root, (), "/" + "/".join(path))
        return resolve_node(node, path)

    def follow(target: Any, holder: tuple[str, ...], at: tuple[str, ...]) -> Any:
        dotted = ".".join(at)
        if not isinstance(target, str) or not target.strip("/. "):
            problems.append(f"{source}: {dotted}: _copy: expected a path such as /section/key, got {target!r}")
            return None
        try:
            path, _ = _lookup(root, holder, target)
        except KeyError:
            problems.append(f"{source}: {dotted}: _copy: nothing at {target!r}")
            return None
        if path in resolving:
            chain = " -> ".join("/" + "/".join(p) for p in (*resolving, path))
            problems.append(f"{source}: {dotted}: _copy cycle: {chain}")
            return None
        resolving.append(path)
        try:
            return copy.deepcopy(resolve_path(path))
        finally:
            resolving.pop()

    def resolve_node(node: Any, at: tuple[str, ...]) -> Any:
        holder = at[:-1]
        target = _copy_target(node)
        if target is not None:
            return follow(target, holder, at)
        if isinstance(node, dict):
            result: dict[str, Any] = {}
            if "_copy" in node:
                copied = follow(node["_copy"], at, at)
                if isinstance(copied, dict):
                    result = copied
                elif copied is not None:
                    problems.append(f"{source}: {'.'.join(at)}: _copy key must point at a mapping, got {copied!r}")
            for key, value in node.items():
                if key != "_copy":
                    result = deep_merge(result, {key: resolve_node(value, (*at, key))})
            return result
        if isinstance(node, list):
            return [resolve_node(v, (*at, str(i))) for i, v in enumerate(node)]
        return node

    return resolve_node(root, ())


def run_time() -> float:
    """The run's start time, shared by every process of one run through the environment."""
    stamp = os.environ.get(RUN_TIME_ENV)
    if stamp is None:
        stamp = repr(time.time())
        os.environ[RUN_TIME_ENV] = stamp
    return float(stamp)


def _set_environment(env: Any, source: str, problems: list[str]) -> None:
    """Set the ``_env:`` section's variables (values expanded first), reporting bad names and values."""
    if not isinstance(env, dict):
        problems.append(f"{source}: _env: expected a mapping of NAME: value, got {env!r}")
        return
    for name, value in env.items():
        value = _expand_strings(value, source, problems, f"_env.{name}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            problems.append(f"{source}: _env.{name}: not an environment variable name (letters, digits, _)")
        elif value is None or isinstance(value, dict | list):
            problems.append(f"{source}: _env.{name}: expected a string or number, got {value!r}")
        else:
            os.environ[str(name)] = ("true" if value else "false") if isinstance(value, bool) else str(value)


def _expand_strings(node: Any, source: str, problems: list[str], key: str) -> Any:
    if isinstance(node, dict):
        return {k: _expand_strings(v, source, problems, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_strings(v, source, problems, f"{key}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if node.startswith("_time:"):
        fmt = node[len("_time:") :].strip() or DEFAULT_TIME_FORMAT
        unknown = [f"%{code}" for code in _TIME_CODE.findall(fmt) if not code or code not in TIME_CODES]
        if unknown:
            allowed = " ".join(f"%{code}" for code in TIME_CODES)
            problems.append(
                f"{source}: {key}: _time: unknown strftime code {unknown[0]!r}; use {allowed} "
                f"(e.g. _time:{DEFAULT_TIME_FORMAT})"
            )
            return node
        return time.strftime(fmt, time.localtime(run_time()))

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        secret = secret_pattern(name)
        if secret is not None:
            problems.append(
                f"{source}: {key}: ${name} looks like a secret (its name matches {secret}) and would be written "
                f"with the params into checkpoints and logs; leave it in the environment only "
                f"(${SECRET_NAMES_ENV} sets the patterns)"
            )
            return match.group(0)
        value = os.environ.get(name)
        if value is None:
            problems.append(f"{source}: {key}: environment variable ${name} is not set")
            return match.group(0)
        return value

    return _ENV_PATTERN.sub(substitute, node)


def secret_pattern(name: str) -> str | None:
    """The pattern of ``SECRET_NAMES`` (or ``$NANUGPT_SECRET_NAMES``) that the variable ``name`` matches, if any."""
    configured = os.environ.get(SECRET_NAMES_ENV)
    patterns = [p.strip() for p in configured.split(",") if p.strip()] if configured is not None else SECRET_NAMES
    return next((p for p in patterns if fnmatch.fnmatchcase(name.upper(), p.upper())), None)
