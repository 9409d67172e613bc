"""Short names for the built-in components, and resolution of user components.

A component is named in params by a short name registered here or by an import
path to the user's own options class (``mypkg.models:MyModelOptions`` or
``mypkg.models.MyModelOptions``). Entries are import strings so that listing
names imports nothing.
"""

from __future__ import annotations

import importlib
import inspect
import re

from nanugpt.config.schema import KIND_BASES, ComponentOptions

BUILTIN: dict[str, dict[str, str]] = {
    "data": {
        "tokenized": "nanugpt.data.tokenized:TokenizedDataOptions",
        "hf_dataset": "nanugpt.data.hf_dataset:HFDatasetOptions",
        "grokking": "nanugpt.data.grokking:GrokkingDataOptions",
        "arithmetic": "nanugpt.data.arithmetic:ArithmeticDataOptions",
        "mixture": "nanugpt.data.mixture:MixtureDataOptions",
    },
    "tokenizer": {
        "byte": "nanugpt.data.tokenizers.byte:ByteTokenizerOptions",
        "char": "nanugpt.data.tokenizers.char:CharTokenizerOptions",
        "tiktoken": "nanugpt.data.tokenizers.tiktoken:TiktokenOptions",
        "hf": "nanugpt.data.tokenizers.hf:HFTokenizerOptions",
        "grokking": "nanugpt.data.tokenizers.grokking:GrokkingTokenizerOptions",
        "arithmetic": "nanugpt.data.tokenizers.arithmetic:ArithmeticTokenizerOptions",
    },
    "model": {
        "nanogpt": "nanugpt.models.nanogpt:NanoGPTOptions",
        "hf_gpt2": "nanugpt.models.hf_models:HFGPT2Options",
        "hf_llama": "nanugpt.models.hf_models:HFLlamaOptions",
        "nanogpt_modern": "nanugpt.models.nanogpt_modern:NanoGPTModernOptions",
        "tinyllama": "nanugpt.models.tinyllama:TinyLlamaOptions",
        "te_llama3": "nanugpt.models.te_llama3:TELlama3Options",
        "tiny_transformer": "nanugpt.models.tiny_transformer:TinyTransformerOptions",
    },
    "optimizer": {
        "adamw_nanogpt": "nanugpt.optim.adamw:AdamWNanoGPTOptions",
        "adamw": "nanugpt.optim.adamw:AdamWOptions",
        "muon": "nanugpt.optim.muon:MuonOptions",
    },
    "scheduler": {
        "cosine": "nanugpt.optim.schedulers:CosineOptions",
        "linear": "nanugpt.optim.schedulers:LinearOptions",
        "constant": "nanugpt.optim.schedulers:ConstantOptions",
        "lr_range_test": "nanugpt.optim.schedulers:LrRangeTestOptions",
    },
    "loss": {
        "autoregressive": "nanugpt.optim.losses:AutoregressiveOptions",
        "grokking": "nanugpt.optim.losses:GrokkingLossOptions",
        "arithmetic": "nanugpt.optim.losses:ArithmeticLossOptions",
    },
    "scaler": {
        "amp": "nanugpt.optim.scalers:AmpScalerOptions",
        "keller": "nanugpt.optim.scalers:KellerScalerOptions",
    },
}

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?")

DEFAULT_MODULE: dict[str, str] = {"loss": "autoregressive", "scaler": "amp"}

# The modules of component options before nanugpt/ became subpackages (docs/architecture.md, "Moved modules"):
# old module -> new module, or for nanugpt.tasks, class name -> new module. A params file that names a component
# by an old path is told the new one; the old paths are not kept importable.
MOVED_MODULES: dict[str, str | dict[str, str]] = {
    "nanugpt.data": "nanugpt.data.tokenized",
    "nanugpt.streaming": "nanugpt.data.hf_dataset",
    "nanugpt.tasks": {
        "GrokkingDataOptions": "nanugpt.data.grokking",
        "ArithmeticDataOptions": "nanugpt.data.arithmetic",
        "TaskDataOptions": "nanugpt.data.tasks",
    },
    "nanugpt.tokenizers.byte": "nanugpt.data.tokenizers.byte",
    "nanugpt.tokenizers.char": "nanugpt.data.tokenizers.char",
    "nanugpt.tokenizers.tiktoken_bpe": "nanugpt.data.tokenizers.tiktoken",
    "nanugpt.tokenizers.hf": "nanugpt.data.tokenizers.hf",
    "nanugpt.tokenizers.grokking": "nanugpt.data.tokenizers.grokking",
    "nanugpt.tokenizers.arithmetic": "nanugpt.data.tokenizers.arithmetic",
    "nanugpt.optimizers": "nanugpt.optim.adamw",
    "nanugpt.muon": "nanugpt.optim.muon",
    "nanugpt.schedulers": "nanugpt.optim.schedulers",
    "nanugpt.losses": "nanugpt.optim.losses",
    "nanugpt.scalers": "nanugpt.optim.scalers",
    "nanugpt.components": "nanugpt.config.schema",
}


class ComponentNotFound(LookupError):
    """Raised when a ``module:`` value names no registered component or importable class."""


class ComponentMoved(ComponentNotFound):
    """Raised when a ``module:`` value names a class by its path from before the subpackages (``MOVED_MODULES``)."""


def resolve(kind: str, module: str) -> type[ComponentOptions]:
    """Return the options class for ``module`` of the given kind.

    ``module`` is a short name from ``BUILTIN[kind]`` or an import path to a
    subclass of the kind's base options class.
    """
    target = BUILTIN[kind].get(module)
    if target is None:
        if "." not in module and ":" not in module:
            raise ComponentNotFound(f"unknown {kind} module {module!r}")
        if not IMPORT_PATH.fullmatch(module):
            raise ComponentNotFound(f"{module!r} is not an import path such as 'my_pkg.my_module:MyOptions'")
        target = module
    mod_name, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
    moved = moved_path(mod_name, attr)
    if moved is not None:
        short = next((name for name, path in BUILTIN[kind].items() if path == moved), None)
        instead = f"'{moved}'" + (f" (or the short name '{short}')" if short else "")
        raise ComponentMoved(f"{target!r} is a path from before nanugpt's subpackages: write {instead}")
    try:
        module_object = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ComponentNotFound(f"cannot import {target!r} ({_one_line(exc)})") from exc
    except Exception as exc:  # the user's module itself fails: name it and its error, not a traceback
        raise ComponentNotFound(f"importing {mod_name!r} raised {type(exc).__name__}: {_one_line(exc)}") from exc
    cls = getattr(module_object, attr, None)
    if cls is None:
        raise ComponentNotFound(f"cannot import {target!r} (module {mod_name!r} has no attribute {attr!r})")
    base = KIND_BASES[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ComponentNotFound(f"{target!r} is not a subclass of {base.__module__}.{base.__name__}")
    missing = [name for name in _required_methods(base) if getattr(cls, name) is getattr(base, name)]
    if missing or inspect.isabstract(cls):
        raise ComponentNotFound(
            f"{target!r} is a base class, not a component: it does not implement "
            f"{', '.join(missing) or 'its abstract methods'}; name a subclass of it that does"
        )
    return cls


def moved_path(module: str, attr: str) -> str | None:
    """``new.module:attr`` for a class named by its module's path from before the move, else None."""
    new = MOVED_MODULES.get(module)
    if isinstance(new, dict):
        new = new.get(attr)
    return None if new is None else f"{new}:{attr}"


def _required_methods(base: type[ComponentOptions]) -> list[str]:
    """The methods a component of this kind must implement: those its base declares (they raise)."""
    return [name for name, value in vars(base).items() if inspect.isfunction(value) and not name.startswith("_")]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
