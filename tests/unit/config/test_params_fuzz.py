"""Property-based test of the params loader and the command line: any input loads or is a ParamsError (exit 2).

Generated inputs: random YAML documents (nested mappings and scalars, written
by PyYAML or as raw text with repeated and broken lines), the tiny valid params
with mutated values, random use of the loader's directives, and random
command-line override lists. Whatever they hold, ``load_params`` returns
``Params`` or raises ``ParamsError`` whose lines read ``<where>: <message>``
(``<where>`` a params file, ``command line --<key>`` or ``command line``), and
the CLIs return 0 or 2 with those lines on stderr. Deterministic (derandomized,
no example database) and bounded by ``MAX_EXAMPLES`` per property.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import TINY_TEXT, tiny_params
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nanugpt.config import registry
from nanugpt.config.params import ParamsError, load_params
from nanugpt.config.schema import Params
from pipeline import params as params_tool
from pipeline.cli import stage_main

MAX_EXAMPLES = 150
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SECTIONS = list(Params.model_fields)
KEYS = sorted(
    {key for section in tiny_params("x").values() for key in section}
    | {"module", "module_kwargs", "hf", "split", "sha256", "prompt", "top_p", "nproc_per_node", "gpus_per_node"}
)
DIRECTIVE_KEYS = ["_inherit", "_copy", "__include__"]
MODULES = sorted({name for names in registry.BUILTIN.values() for name in names}) + [
    "nanugpt.config.schema:ModelOptions",
    "nanugpt.optim.adamw:AdamWOptions",
    "no_such_pkg.mod:Options",
    "bad name!",
    "nanugpt.config.params:Params",
    "nanugpt.config.schema.nothing",
]

# Text that exercises the directives and YAML's own syntax.
DIRECTIVE_TEXT = st.sampled_from(
    [
        "_copy: /optimizer/lr",
        "_copy: ../lr",
        "_copy: /nowhere",
        "_copy:",
        "_copy: /",
        "_time:",
        "_time:%Y%m%d",
        "_time:%Q",
        "_time:%",
        "$HOME",
        "${HOME}",
        "$NANUGPT_FUZZ_UNSET",
        "${NANUGPT_FUZZ_UNSET}",
        "$$",
        "${",
        "FILE:",
        "inf",
        "-inf",
        "nan",
        ".inf",
        ".nan",
        "1e30",
        "null",
        "~",
        "true",
        "maybe",
        "[1, 2",
        "{a: 1}",
        "ROMEO:",
        "a: b",
        "&a x",
        "*a",
        "!!python/object:os.system",
        "--",
        "%",
        "0x10",
        "1_000",
        "",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    DIRECTIVE_TEXT,
    st.sampled_from(MODULES),
)
KEY_NAMES = st.one_of(st.sampled_from(SECTIONS + KEYS + DIRECTIVE_KEYS), st.text(min_size=1, max_size=8))
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.dictionaries(KEY_NAMES, children, max_size=5), st.lists(children, max_size=3)),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(st.sampled_from(SECTIONS + DIRECTIVE_KEYS + ["optimiser"]), TREES, max_size=6)

DOTTED_KEYS = st.one_of(
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTIONS + ["foo"]), st.sampled_from(KEYS + DIRECTIVE_KEYS)),
    st.sampled_from(["optimizer.module_kwargs.lr", "data.hf.split", "model", "a..b", ".x", "x.", "general.seed.x"]),
    st.text(max_size=10),
)
OVERRIDE_VALUES = st.one_of(
    DIRECTIVE_TEXT,
    st.text(max_size=10),
    st.sampled_from(MODULES),
    SCALARS.map(lambda value: yaml.safe_dump(value, default_flow_style=True).strip()),
)
OVERRIDE_ITEMS = st.one_of(
    st.builds(lambda key, value: [f"--{key}", value], DOTTED_KEYS, OVERRIDE_VALUES),
    st.builds(lambda key, value: [f"--{key}={value}"], DOTTED_KEYS, OVERRIDE_VALUES),
    st.builds(lambda key: [f"--{key}"], DOTTED_KEYS),
    st.builds(lambda token: [token], st.sampled_from(["--", "-x", "params.yaml", "lr=1", "=", "--=1"])),
)
OVERRIDES = st.lists(OVERRIDE_ITEMS, max_size=4).map(lambda items: [token for item in items for token in item])


def _dotted_paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not isinstance(tree, dict):
        return [prefix] if prefix else []
    paths = [prefix] if prefix else []
    for key, value in tree.items():
        paths += _dotted_paths(value, (*prefix, key))
    return paths


@st.composite
def mutated_params(draw: st.DrawFn) -> dict[str, Any]:
    """The tiny valid params with a few values replaced, removed or added (directives included)."""
    tree = copy.deepcopy(tiny_params("corpus.txt"))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _dotted_paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        node = tree
        for part in path[:-1]:
            node = node[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[path[-1]] = draw(TREES)
        elif action == "delete":
            del node[path[-1]]
        elif isinstance(node, dict):
            node[draw(KEY_NAMES)] = draw(TREES)
    return tree


@st.composite
def raw_texts(draw: st.DrawFn) -> str:
    """YAML text with lines repeated, dropped or damaged: duplicate keys, bad indentation, broken syntax."""
    lines = yaml.safe_dump(draw(st.one_of(mutated_params(), DOCUMENTS)), sort_keys=False).splitlines()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if not lines:
            break
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        edit = draw(st.sampled_from(["repeat", "drop", "indent", "insert"]))
        if edit == "repeat":
            lines.insert(draw(st.integers(min_value=index, max_value=len(lines))), lines[index])
        elif edit == "drop":
            del lines[index]
        elif edit == "indent":
            lines[index] = "  " + lines[index]
        else:
            lines.insert(index, draw(st.one_of(DIRECTIVE_TEXT, st.text(max_size=10))))
    return "\n".join(lines) + "\n"


PROBLEM = re.compile(r"(?P<where>command line --\S+|command line|\S.*?): (?P<message>\S.*)")


def check_problems(problems: list[str], folder: Path) -> None:
    """Every problem is one line of the documented form, naming a file of ``folder`` or the command line."""
    assert problems, "a ParamsError names at least one problem"
    for line in problems:
        assert isinstance(line, str) and len(line.splitlines()) == 1, repr(line)
        match = PROBLEM.fullmatch(line)
        assert match, repr(line)
        where = match["where"]
        if not where.startswith("command line"):  # a file, named as given (relative ones from ``folder``)
            assert (folder / where).resolve().is_relative_to(folder.resolve()), repr(line)


def load_or_refuse(text: str, overrides: list[str]) -> None:
    """Write ``text`` (and an includable base) to a fresh folder, load it: it loads or fails as documented."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "corpus.txt").write_text(TINY_TEXT)
        (folder / "base.yaml").write_text(yaml.safe_dump(tiny_params("corpus.txt")))
        (folder / "sub").mkdir()
        path = folder / "params.yaml"
        path.write_text(text)
        try:
            params = load_params(path, overrides)
        except ParamsError as exc:
            check_problems(exc.problems, folder)
            event("refused")
        else:
            assert isinstance(params, Params)
            event("loaded")


def dump(tree: dict[str, Any]) -> str:
    return yaml.safe_dump(tree, sort_keys=False)


@pytest.fixture(autouse=True)
def fixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/fuzz")
    monkeypatch.delenv("NANUGPT_FUZZ_UNSET", raising=False)


@FUZZ
@given(tree=DOCUMENTS)
def test_random_documents_load_or_refuse(tree: dict[str, Any]) -> None:
    load_or_refuse(dump(tree), [])


@FUZZ
@given(
    tree=mutated_params(),
    include=st.sampled_from([None, "base.yaml", ["base.yaml"], "sub", "nope.yaml", "params.yaml", 5]),
)
def test_mutated_params_load_or_refuse(tree: dict[str, Any], include: Any) -> None:
    if include is not None:
        tree = {"__include__": include, **tree}
    load_or_refuse(dump(tree), [])


@FUZZ
@given(text=raw_texts())
def test_damaged_yaml_text_loads_or_refuses(text: str) -> None:
    load_or_refuse(text, [])


@FUZZ
@given(overrides=OVERRIDES)
def test_override_lists_load_or_refuse(overrides: list[str]) -> None:
    load_or_refuse(dump(tiny_params("corpus.txt")), overrides)


VALID_OVERRIDES = st.lists(
    st.sampled_from(
        [
            ["--optimizer.lr", "1e-3"],
            ["--optimizer.lr=3e-4"],
            ["--training.max_steps", "5"],
            ["--model.bias", "false"],
            ["--generate.top_p", "null"],
            ["--generate.top_p", "0.9"],
            ["--data.sha256", "null"],
            ["--model.n_layer", "1"],
            ["--optimizer.module", "adamw"],
            ["--scheduler.module", "constant"],
            ["--general.device_type", "cpu"],
            ["--data.hf.data_files", "[a.txt, b.txt]"],
            ["--eval.eval_iters", "1"],
            ["--training.resume", "never"],
        ]
    ),
    max_size=4,
).map(lambda items: [token for item in items for token in item])
TYPED = st.text(max_size=20).filter(lambda text: "$" not in text and not text.startswith(("_copy:", "_time:", "--")))


@FUZZ
@given(
    overrides=VALID_OVERRIDES, key=st.sampled_from(["generate.prompt", "general.run_name", "data.source"]), text=TYPED
)
def test_string_keys_take_any_text_typed(overrides: list[str], key: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(dump(tiny_params("corpus.txt")))
        params = load_params(path, [*overrides, f"--{key}", text]).to_dict()
        section, name = key.split(".")
        assert params[section][name] == text


@FUZZ
@given(tree=mutated_params(), overrides=OVERRIDES)
def test_command_lines_exit_0_or_2_with_documented_lines(tree: dict[str, Any], overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "params.yaml"
        path.write_text(dump(tree))
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)  # the stage CLI's default params file is ./params.yaml
            for run_cli in (
                lambda argv: params_tool.main(["check", *argv]),
                lambda argv: stage_main(argv, "doc", lambda params: None),
            ):
                for argv in ([str(path), *overrides], overrides):
                    errors = _stderr_of(run_cli, argv)
                    assert errors.code in (0, 2), errors
                    if errors.code == 2:
                        check_problems(errors.lines, folder)


class _Result:
    def __init__(self, code: int, lines: list[str]):
        self.code, self.lines = code, lines

    def __repr__(self) -> str:
        return f"exit {self.code}: {self.lines}"


def _stderr_of(run_cli: Any, argv: list[str]) -> _Result:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = run_cli(argv)
    return _Result(code, err.getvalue().splitlines())
