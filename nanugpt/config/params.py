"""Loading and validating a params file against the schema (``nanugpt.config.schema``).

``load_params(path, overrides)`` is the one entry point: it reads the YAML
(with the directives of ``nanugpt.config.loader``), validates every section,
and raises ``ParamsError`` listing every problem, one line each, naming the
file, the dotted key, what was expected and what was found.

A line reads ``<where>: <dotted key>: <message>``, where ``<where>`` is the
params file or ``command line --<key>`` for a key an override set; problems of
a whole file read ``<file>: <message>``, and a malformed override
``command line: <message>``. Floats must be finite (``inf`` and ``nan`` are
refused everywhere).
"""

from __future__ import annotations

import difflib
import functools
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nanugpt.config import registry
from nanugpt.config.loader import ConfigError, load_yaml_tree, parse_value, split_overrides
from nanugpt.config.schema import COMPONENT_SECTIONS, KIND_BASES, ComponentOptions, Params


class ParamsError(ConfigError):
    """Invalid params: ``problems`` has one line per problem."""


def load_params(path: str | Path, overrides: Sequence[str] = (), schema: type[Params] = Params) -> Params:
    """Read, resolve and validate a params file against ``schema``, applying ``--section.key value`` overrides.

    An override's value is the text typed for a key the schema types as a string (``null`` also means
    None where None is allowed), and YAML otherwise (``3e-4``, ``true``, ``[1, 2]``, ``null``).
    """
    source = str(path)
    try:
        override_keys = set(split_overrides(overrides))
        tree = load_yaml_tree(path, overrides, parse_override=functools.partial(_override_value, schema))
    except ConfigError as exc:
        raise ParamsError(exc.problems) from None
    return validate_params(tree, source, override_keys, schema)


def _override_value(schema: type[Params], tree: dict[str, Any], dotted: str, text: str) -> Any:
    """The value of ``--dotted text``: the text itself for a string key, else its YAML value."""
    annotation = _annotation_at(schema, tree, dotted.split("."))
    if annotation is str:
        return text
    if set(typing.get_args(annotation)) == {str, type(None)}:
        return None if text in ("null", "~") else text
    return parse_value(text)


def _annotation_at(schema: type[Params], tree: dict[str, Any], parts: list[str]) -> Any:
    """The schema's type of the key at ``parts`` (a component's from its ``module``), or None if unknown."""
    section, *keys = parts
    model: Any = None
    if section in COMPONENT_SECTIONS:
        raw = tree.get(section)
        module = raw.get("module") if isinstance(raw, dict) else None
        module = module if isinstance(module, str) else registry.DEFAULT_MODULE.get(section)
        if module is None:
            return None
        try:
            model = registry.resolve(section, module)
        except registry.ComponentNotFound:
            return None  # reported by validation
        if keys[:1] == ["module_kwargs"]:
            keys = keys[1:]
    elif section in schema.model_fields:
        model = schema.model_fields[section].annotation
    annotation: Any = model
    for key in keys:
        annotation = _model_of(annotation)
        field = annotation.model_fields.get(key) if annotation is not None else None
        if field is None:
            return None
        annotation = field.annotation
    return annotation if keys else None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model behind ``Model`` or ``Model | None``."""
    candidates = [a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)]
    if len(candidates) == 1 and isinstance(candidates[0], type) and issubclass(candidates[0], BaseModel):
        return candidates[0]
    return None


def validate_params(
    tree: dict[str, Any],
    source: str,
    override_keys: frozenset[str] | set[str] = frozenset(),
    schema: type[Params] = Params,
) -> Params:
    """Validate a resolved params dict against ``schema``; raise ``ParamsError`` naming every problem."""
    problems: list[str] = []

    def where(key: str) -> str:
        """The command line when an override set this key, a mapping above it or a key below it; else the file."""
        for given in override_keys:
            if given == key or key.startswith(given + ".") or given.startswith(key + "."):
                return f"command line --{given}"
        return source

    data = dict(tree)
    for section in COMPONENT_SECTIONS:
        raw = data.get(section)
        if raw is None and section in registry.DEFAULT_MODULE:
            raw = {"module": registry.DEFAULT_MODULE[section]}
        if raw is None:
            continue  # reported as missing by the Params validation below
        options = _validate_component(section, raw, where, problems)
        data[section] = options if options is not None else KIND_BASES[section].model_construct()
    try:
        params = schema.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(exc, schema, "", where))
        raise ParamsError(problems) from None
    if problems:
        raise ParamsError(problems)
    problems.extend(f"{where(key)}: {key}: {message}" for key, message in params.cross_checks())
    for section in COMPONENT_SECTIONS:
        problems.extend(f"{where(key)}: {key}: {message}" for key, message in getattr(params, section).check(params))
    if problems:
        raise ParamsError(problems)
    return params


def _validate_component(section: str, raw: Any, where: Any, problems: list[str]) -> ComponentOptions | None:
    if isinstance(raw, ComponentOptions):
        return raw
    if not isinstance(raw, dict):
        problems.append(f"{where(section)}: {section}: expected a mapping with 'module:', got {raw!r}")
        return None
    fields = dict(raw)
    module = fields.get("module")
    if not isinstance(module, str):
        names = ", ".join(sorted(registry.BUILTIN[section]))
        problems.append(f"{where(section + '.module')}: {section}.module: required, one of {names} or an import path")
        return None
    kwargs = fields.pop("module_kwargs", None)
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            problems.append(f"{where(section)}: {section}.module_kwargs: expected a mapping, got {kwargs!r}")
            return None
        for key, value in kwargs.items():
            if key in fields and fields[key] != value:
                problems.append(
                    f"{where(section)}: {section}.{key}: given both beside 'module' ({fields[key]!r}) "
                    f"and in module_kwargs ({value!r}); keep one"
                )
            fields[key] = value
    try:
        options_cls = registry.resolve(section, module)
    except registry.ComponentMoved as exc:
        problems.append(f"{where(section + '.module')}: {section}.module: {exc}")
        return None
    except registry.ComponentNotFound as exc:
        hint = _did_you_mean(module, registry.BUILTIN[section])
        names = ", ".join(sorted(registry.BUILTIN[section]))
        problems.append(f"{where(section + '.module')}: {section}.module: {exc}{hint}; registered: {names}")
        return None
    try:
        return options_cls.model_validate(fields)
    except ValidationError as exc:
        problems.extend(_describe(exc, options_cls, section, where))
        return None


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names of the (nested) model that holds the key at ``loc``."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(exc: ValidationError, model: type[BaseModel], prefix: str, where: Any) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        key = ".".join([prefix, *loc] if prefix else loc)
        if error["type"] == "extra_forbidden":
            hint = _did_you_mean(loc[-1], _fields_at(model, loc))
            message = f"unknown key{hint}"
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            text = error["msg"].removeprefix("Value error, ")  # a validator's own words need no prefix
            message = f"{text[0].lower()}{text[1:]}, got {error['input']!r}"
        lines.append(f"{where(key)}: {key}: {message}")
    return lines


def params_from_checkpoint(plain: dict[str, Any]) -> Params:
    """Rebuild ``Params`` from the plain dict stored in a checkpoint or ``run_info.json``.

    The stored dict holds every section of the run, the orchestrator's too (``launch``); the library
    validates and returns its own sections and leaves the others to their owner.
    """
    return validate_params({k: v for k, v in plain.items() if k in Params.model_fields}, "checkpoint params")
