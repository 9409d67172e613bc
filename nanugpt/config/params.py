"""The params schema: every section and key of a params file, typed and validated.

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
import hashlib
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

from nanugpt.config import registry
from nanugpt.config.components import (
    KIND_BASES,
    ComponentOptions,
    DataOptions,
    LossOptions,
    ModelOptions,
    OptimizerOptions,
    ScalerOptions,
    SchedulerOptions,
    TokenizerOptions,
)
from nanugpt.config.loader import ConfigError, load_yaml_tree, parse_value, split_overrides


class Section(BaseModel):
    """A fixed params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GeneralParams(Section):
    project_name: str = Field("nanugpt", description="project name (W&B project)")
    run_name: str = Field("run", description="name of this run (W&B run name, log lines)")
    seed: int = Field(42, ge=0, description="seed of model init, data order and dropout")
    device_type: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks cuda when available")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="autocast dtype of forward/backward; float32 on CPUs without bf16 hardware"
    )
    torch_compile: bool = Field(
        False,
        description="compile the model with torch.compile; runs then agree to rounding, not bitwise "
        "(inductor kernels), unlike eager CPU runs",
    )


class TrainingParams(Section):
    max_steps: int = Field(gt=0, description="optimizer steps in the run")
    device_batch_size: int = Field(gt=0, description="sequences per forward pass on one process")
    global_batch_size: int = Field(
        gt=0, description="sequences per optimizer step over all processes; accumulation = global / (device * world)"
    )
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")
    log_every: int = Field(10, gt=0, description="steps between log lines")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0 = only at the end")
    checkpoint_every_min: float = Field(
        0.0, ge=0, description="minutes of wall clock between checkpoints, besides checkpoint_every; 0 = off"
    )
    keep_last: int = Field(2, ge=1, description="step checkpoints kept besides last.pt")
    resume: str = Field(
        "auto", description="'auto': resume from OUT_DIR/checkpoints/last.pt when compatible; 'never'; or a path"
    )
    peak_flops: float | None = Field(
        None, gt=0, description="device peak FLOP/s for MFU; null = GPU table, or a matmul measured on CPU"
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="data parallelism over processes: 'ddp' (every rank holds the whole model and optimizer) or "
        "'fsdp' (FSDP2: parameters, gradients and optimizer state sharded per block; checkpoints are sharded "
        "DCP folders); one process ignores the sharding",
    )
    reshard_after_forward: bool = Field(
        True,
        description="fsdp: free each block's gathered parameters after its forward and gather them again in "
        "backward (ZeRO-3-like); false keeps them until backward (ZeRO-2-like: more memory, fewer all-gathers)",
    )
    activation_checkpointing: Literal["none", "full"] = Field(
        "none", description="'full': recompute each transformer block's activations in backward instead of storing them"
    )


# sha256 of the official HellaSwag validation file (rowanz/hellaswag data/hellaswag_val.jsonl, unchanged since 2019),
# as Hugging Face datasets pinned it in datasets/hellaswag/dataset_infos.json (12,246,618 bytes)
HELLASWAG_VAL_SHA256 = "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"


class EvalParams(Section):
    eval_every: int = Field(250, ge=0, description="steps between val evaluations during training; 0 = only at end")
    eval_iters: int = Field(20, gt=0, description="fixed val batches per evaluation")
    tasks: list[Literal["hellaswag"]] = Field(
        default_factory=list, description="benchmarks the evaluate stage scores besides the loss: hellaswag"
    )
    hellaswag_path: str | None = Field(
        None,
        min_length=1,
        description="local HellaSwag JSONL (ctx, endings, label); null = download hellaswag_val.jsonl once into "
        "DATA_ROOT/hellaswag/raw/",
    )
    hellaswag_sha256: str | None = Field(
        HELLASWAG_VAL_SHA256,
        pattern="^[0-9a-f]{64}$",
        description="expected sha256 of the HellaSwag file (default: the official validation file's); "
        "null = not checked",
    )


CHECKPOINT_DEFAULT = "last"
CHECKPOINT_DESCRIPTION = (
    "checkpoint to load: 'last' (OUT_DIR/checkpoints/last.pt), 'best' (best.pt, lowest val loss) or a path"
)


class GenerateParams(Section):
    prompt: str = Field("\n", description="prompt text, or FILE:path to read it from a file")
    num_samples: int = Field(1, gt=0, description="samples to draw")
    max_new_tokens: int = Field(200, gt=0, description="tokens to generate per sample")
    temperature: float = Field(0.8, ge=0, description="softmax temperature; 0 = greedy")
    top_k: int | None = Field(200, gt=0, description="keep the k most likely tokens; null = all")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass; null = off")
    seed: int = Field(1337, ge=0, description="sampling seed: the same seed gives the same text")
    checkpoint: str = Field(CHECKPOINT_DEFAULT, min_length=1, description=CHECKPOINT_DESCRIPTION)


class ExportParams(Section):
    checkpoint: str = Field(CHECKPOINT_DEFAULT, min_length=1, description=CHECKPOINT_DESCRIPTION)


class LoggingParams(Section):
    wandb: bool = Field(False, description="log to Weights & Biases (WANDB_MODE=offline works offline)")
    dvclive: bool = Field(True, description="write DVC metrics and plots files under OUT_DIR")
    tensorboard: bool = Field(False, description="write TensorBoard event files under OUT_DIR/tensorboard")


class Params(Section):
    """A complete, validated params file: the library's sections.

    An orchestrator adds its own sections by subclassing it and passing its class as ``schema`` to
    ``load_params`` (the pipeline adds ``launch`` this way).
    """

    general: GeneralParams = GeneralParams()
    data: SerializeAsAny[DataOptions]
    tokenizer: SerializeAsAny[TokenizerOptions]
    model: SerializeAsAny[ModelOptions]
    training: TrainingParams
    optimizer: SerializeAsAny[OptimizerOptions]
    scheduler: SerializeAsAny[SchedulerOptions]
    loss: SerializeAsAny[LossOptions]  # validate_params fills in registry.DEFAULT_MODULE when absent
    scaler: SerializeAsAny[ScalerOptions]
    eval: EvalParams = EvalParams()
    generate: GenerateParams = GenerateParams()
    export: ExportParams = ExportParams()
    logging: LoggingParams = LoggingParams()

    def cross_checks(self) -> list[tuple[str, str]]:
        """Problems that involve more than one section: ``(dotted key, message)`` pairs (``cross_check``).

        An orchestrator's schema adds the rules of its own sections by extending this.
        """
        return cross_check(self)

    def to_dict(self) -> dict[str, Any]:
        """The explicit, plain form of these params (what ``params.yaml`` holds)."""
        return self.model_dump(mode="json")

    def digest(self, keys: Sequence[str]) -> str:
        """A sha256 over the values of the given sections or dotted keys, to tell whether two runs match."""
        plain = self.to_dict()
        subset = {}
        for key in keys:
            node: Any = plain
            for part in key.split("."):
                node = node[part]
            subset[key] = node
        return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()


COMPONENT_SECTIONS = ("data", "tokenizer", "model", "optimizer", "scheduler", "loss", "scaler")


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


def cross_check(params: Params) -> list[tuple[str, str]]:
    """Problems that involve more than one key and no single component: ``(dotted key, message)`` pairs.

    Rules of one component (its ``check`` hook) live with the component; see ``nanugpt.config.components``.
    """
    t = params.training
    if t.global_batch_size % t.device_batch_size:
        message = f"must be a multiple of training.device_batch_size ({t.device_batch_size}), got {t.global_batch_size}"
        return [("training.global_batch_size", message)]
    if t.strategy == "fsdp" and params.general.dtype == "float16":
        message = "fsdp does not combine with general.dtype float16 (loss scaling of sharded gradients); use bfloat16"
        return [("training.strategy", message)]
    return []


def params_from_checkpoint(plain: dict[str, Any]) -> Params:
    """Rebuild ``Params`` from the plain dict stored in a checkpoint or ``run_info.json``.

    The stored dict holds every section of the run, the orchestrator's too (``launch``); the library
    validates and returns its own sections and leaves the others to their owner.
    """
    return validate_params({k: v for k, v in plain.items() if k in Params.model_fields}, "checkpoint params")
