"""Translate a nanuGPT config (sytelus/nanuGPT ``configs/``) into one explicit params file of ours.

    python -m pipeline.params import-nanugpt configs/train_gpt2/tinyshakespeare.yaml -o params/my_run.yaml
    python -m pipeline.params import-nanugpt train.yaml --tokenize configs/tokenize/tinyshakespeare_byte.yaml

The config's ``__include__`` chain, ``_inherit: false`` and ``_copy:`` are resolved first; ``$VAR`` and
``_time:`` are read as written. Then every key it holds is accounted for, one of three ways:

* **mapped**: it sets a key of ours (``learning_rate`` -> ``optimizer.lr``, ``warmup_iters`` ->
  ``scheduler.warmup_steps``, ``end_factor`` -> ``scheduler.min_lr_ratio``, ...);
* **implied**: it says what we do anyway (``max_iters`` equal to ``training.max_steps``, ``_env`` copies of
  the run's names, log file names); printed as a note;
* **refused**: it has no counterpart here (``general.distributed_backend: horovod``); printed with the
  reason, one line per key.

The keys nanuGPT's component functions take by default (``get_model(mlp_bias=False, ...)``) are read too,
so an imported model has nanuGPT's shape, not our defaults. A training config names its token files, not
its raw text: the text source comes from a table of the datasets nanuGPT ships, or from the tokenize config
given with ``--tokenize``. The result is validated with the pipeline's schema; its problems are refusals too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanugpt.config.loader import ConfigError, load_unexpanded
from nanugpt.config.params import ParamsError, validate_params
from nanugpt.data.grokking import FULL_TABLE_PRIME
from pipeline.schema import PipelineParams

MISSING: Any = object()
GROKKING_SAMPLE = 4_000_000  # pairs drawn for a prime whose whole table is too large (params/grokking_prime50k.yaml)

# nanuGPT's component functions -> our registered short names, by section
MODULES: dict[str, dict[str, str]] = {
    "model": {
        "nanugpt.models.nanogpt.get_model": "nanogpt",
        "nanugpt.models.nanogpt_keller.get_model": "nanogpt_modern",
        "nanugpt.models.tinyllama.get_model": "tinyllama",
        "nanugpt.models.tiny_transformer.get_model": "tiny_transformer",
        "nanugpt.models.hf_gpt2.get_model": "hf_gpt2",
        "nanugpt.models.hf_llama.get_model": "hf_llama",
        "nanugpt.models.te_llama3.get_model": "te_llama3",
    },
    "tokenizer": {
        "nanugpt.tokenizers.byte_tokenizer.get_tokenizer_factory": "byte",
        "nanugpt.tokenizers.tiktoken_wrap.get_tokenizer_factory": "tiktoken",
        "nanugpt.tokenizers.hf_tokenizer.get_tokenizer_factory": "hf",
        "nanugpt.tokenizers.grokking_tokenizer.get_tokenizer_factory": "grokking",
        "nanugpt.tokenizers.grokking_tokenizer.get_tokenizer": "grokking",
        "nanugpt.tokenizers.arithmatic_tokenizer.get_tokenizer_factory": "arithmetic",
    },
    "data": {
        "nanugpt.data.tokenized_data.get_data": "tokenized",
        "nanugpt.data.grokking_data.get_data": "grokking",
        "nanugpt.data.arithmatic_data.get_data": "arithmetic",
    },
    "optimizer": {
        "nanugpt.optimizers.adamw_nanogpt.get_optim": "adamw_nanogpt",
        "nanugpt.optimizers.adamw.get_optim": "adamw",
        "nanugpt.optimizers.muon.get_optim": "muon",
    },
    "scheduler": {
        "nanugpt.schedulers.linear.get_scheduler": "linear",
        "nanugpt.schedulers.cosine.get_scheduler": "cosine",
        "nanugpt.schedulers.constant.get_scheduler": "constant",
        "nanugpt.schedulers.lr_range_test.get_scheduler": "lr_range_test",
    },
    "loss": {
        "nanugpt.losses.autoregressive_loss.get_loss_factory": "autoregressive",
        "nanugpt.losses.grokking_loss.get_loss_factory": "grokking",
        "nanugpt.losses.arithmatic_loss.get_loss_factory": "arithmetic",
    },
    "scaler": {
        "nanugpt.scalers.amp_grad_scaler.get_scaler": "amp",
        "nanugpt.scalers.keller_scaler.get_scaler": "keller",
    },
}

# Defaults of nanuGPT's get_model functions that differ from ours or that we must check
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "nanogpt": {"mlp_bias": False, "attn_proj_bias": False, "attn_kv_bias": False, "layer_norm_bias": False},
    "tiny_transformer": {"mlp_bias": True, "attn_proj_bias": True, "attn_kv_bias": False},
    "tinyllama": {"n_query_groups": 1, "intermediate_size": 2048, "bias": False},
}

# nanuGPT's muon get_optim: its defaults, and its keys -> ours
MUON_DEFAULTS: dict[str, Any] = {
    "muon_lr": 0.05,
    "muon_momentum_max": 0.95,
    "muon_momentum_min": 0.85,
    "muon_momentum_warmup": 300,
    "embed_params_lr": 0.6,
    "head_params_lr": 0.008,
    "scalar_params_lr": 0.04,
    "adam_betas": (0.8, 0.95),
    "adam_eps": 1e-8,
}
MUON_KEYS = {
    "muon_lr": "lr",
    "muon_momentum_max": "momentum",
    "muon_momentum_min": "momentum_start",
    "muon_momentum_warmup": "momentum_warmup_steps",
    "embed_params_lr": "embed_lr",
    "adam_betas": "adamw_betas",
    "adam_eps": "adamw_eps",
}

# Llama options of nanuGPT's tinyllama that ours has only in one form: the accepted value, and why
TINYLLAMA_FIXED: dict[str, tuple[Any, str]] = {
    "rotary_percentage": (1.0, "tinyllama rotates the whole head (Llama); partial rotary (GPT-NeoX) is not built"),
    "parallel_residual": (False, "tinyllama has sequential residuals (Llama); parallel ones (GPT-NeoX) are not built"),
    "_mlp_class": ("LLaMAMLP", "tinyllama has the SwiGLU MLP (LLaMAMLP); the GELU GptNeoxMLP is not built"),
    "bias": (False, "tinyllama has no biases (Llama)"),
    "shared_attention_norm": (False, "tinyllama has one norm per sublayer"),
    "condense_ratio": (1, "tinyllama has no rotary position condensing"),
}

# Datasets nanuGPT's tokenize configs prepare -> our data options that read the same text
KNOWN_SOURCES: dict[str, dict[str, Any]] = {
    "tinyshakespeare": {},  # our default source is this corpus
    "openwebtext": {"source": "hf:Skylion007/openwebtext", "val_fraction": 0.0005, "verify": "size"},
    "tinystories_v2": {"source": "hf:roneneldan/TinyStories", "val_fraction": 0.01, "verify": "size"},
    "tinystories": {"source": "hf:roneneldan/TinyStories", "val_fraction": 0.01, "verify": "size"},
    "wikitext-103-raw-v1": {
        "source": "hf:Salesforce/wikitext",
        "hf": {"config": "wikitext-103-raw-v1"},
        "verify": "size",
    },
}
BYTE_SPECIAL_TOKENS = ("<EOS>", "<PAD>", "<UNK>", "<BOS>")  # nanuGPT's byte tokenizer: ids 256, 257, 258, 259
TOKENIZED_PATH = re.compile(r"tokenized/(?P<dataset>[^/]+)/(?P<tokenizer>[^/]+)/[^/]+\.bin$")


@dataclass
class Imported:
    """The translation: our params tree, the notes, and the refused keys (each ``dotted.key: value: reason``)."""

    tree: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    params: PipelineParams | None = None  # the tree validated, when it is valid


class Translation:
    """One nanuGPT tree being read key by key; what is not read by the end is refused as unknown."""

    def __init__(self, source: dict[str, Any], result: Imported):
        self.source = source
        self.result = result
        self.read: set[str] = set()

    def get(self, dotted: str, default: Any = MISSING) -> Any:
        """The value at ``dotted`` (marked as read), or ``default`` when the config does not have it."""
        node: Any = self.source
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        self.read.add(dotted)
        return node

    def set(self, dotted: str, value: Any) -> None:
        """Set our key ``dotted``."""
        section, _, key = dotted.partition(".")
        self.result.tree.setdefault(section, {})[key] = value

    def copy(self, theirs: str, ours: str, convert: Callable[[Any], Any] = lambda v: v) -> None:
        """Map ``theirs`` to ``ours`` when the config has it."""
        value = self.get(theirs)
        if value is not MISSING:
            self.set(ours, convert(value))

    def note(self, dotted: str, text: str) -> None:
        """Record a note about ``dotted`` (what we do instead)."""
        self.result.notes.append(f"{dotted}: {text}")

    def refuse(self, dotted: str, value: Any, reason: str) -> None:
        """Record ``dotted`` as not mapped, with its value and the reason."""
        self.result.refused.append(f"{dotted}: {value!r}: {reason}")

    def expect(self, dotted: str, accepted: Any, reason: str, default: Any = MISSING) -> None:
        """Accept ``dotted`` when it is ``accepted`` (or absent); refuse it with ``reason`` otherwise."""
        value = self.get(dotted, default)
        if value is not MISSING and value != accepted:
            self.refuse(dotted, value, reason)

    def implied(self, dotted: str, text: str) -> None:
        """Read ``dotted`` (if present) as something we do anyway, with a note saying what."""
        if self.get(dotted) is not MISSING:
            self.note(dotted, text)

    def unread(self) -> list[str]:
        """Leaf keys of the config that nothing read."""
        leaves: list[str] = []

        def walk(node: Any, prefix: str) -> None:
            if prefix in self.read:
                return
            if isinstance(node, dict) and node:
                for key, value in node.items():
                    walk(value, f"{prefix}.{key}" if prefix else str(key))
            else:
                leaves.append(prefix)

        walk(self.source, "")
        return leaves


def module_of(t: Translation, section: str) -> str | None:
    """Our short name for the section's ``module``, or None (refused) when there is none."""
    theirs = t.get(f"{section}.module")
    if theirs is MISSING:
        return None
    ours = MODULES[section].get(theirs)
    if ours is None:
        t.refuse(f"{section}.module", theirs, f"no {section} of ours corresponds to this nanuGPT function")
    else:
        t.set(f"{section}.module", ours)
    if t.source.get(section, {}).get("module_kwargs") == {}:
        t.get(f"{section}.module_kwargs")  # nothing to map
    return ours


def translate_general(t: Translation) -> None:
    """``general``, ``logging`` and ``_env``: names, seed, device, dtype, W&B; the rest is implied or refused."""
    t.copy("general.project_name", "general.project_name")
    run_name = t.get("general.run_name")
    if isinstance(run_name, str) and run_name.startswith("_time:"):
        t.note("general.run_name", "a _time: stamp is not kept in an explicit file; DVC names each experiment")
    elif run_name is not MISSING:
        t.set("general.run_name", run_name)
    t.copy("general.seed", "general.seed")
    device = t.get("general.device_type")
    if device is not MISSING:
        t.set("general.device_type", device if device in ("cpu", "cuda") else "auto")
    t.copy("general.dtype", "general.dtype")
    t.copy("general.torch_compile", "general.torch_compile")
    out_dir = t.get("general.out_dir")
    if out_dir is not MISSING:
        t.note("general.out_dir", f"runs write to $OUT_DIR (default ./out); set OUT_DIR to place them ({out_dir})")
    backend = t.get("general.distributed_backend")
    if backend in ("nccl", "gloo", None, ""):
        t.note("general.distributed_backend", "implied: NCCL on GPUs, gloo on CPUs")
    elif backend is not MISSING:
        t.refuse("general.distributed_backend", backend, "only torchrun's NCCL (GPU) and gloo (CPU) are supported")
    t.expect("general.distributed_init_method", "env://", "torchrun's env:// is the only init method")
    t.implied("general.enable_distributed", "implied: a run is distributed when torchrun starts several processes")
    description = t.get("general.run_description")
    if description not in (MISSING, None, ""):
        t.refuse("general.run_description", description, "no description key; say it in the git commit")
    for key in ("project_name", "run_name", "run_description", "log_dir"):
        t.implied(f"logging.{key}", "implied: W&B and the logs use general.project_name / general.run_name")
    for key in ("log_filename", "summaries_filename", "allow_overwrite_log", "summaries_stdout"):
        t.implied(f"logging.{key}", "implied: stages log to stdout (OUT_DIR/logs/<stage>.log under Snakemake)")
    t.implied("logging.metrics_type", "implied: the loss decides the metrics")
    t.copy("logging.enable_wandb", "logging.wandb")
    env = t.get("_env", {})
    for key, value in env.items() if isinstance(env, dict) else ():
        if key in ("project_name", "run_name") and value == t.source.get("general", {}).get(key):
            t.note(f"_env.{key}", "implied: the run's names reach W&B without environment variables")
        else:
            t.refuse(f"_env.{key}", value, "set the variable in the environment of the run")
    t.read.add("_env")


def translate_model(t: Translation) -> None:
    """``model``: the family, its shape and the options nanuGPT's ``get_model`` takes (with its defaults)."""
    module = module_of(t, "model")
    kwargs = "model.module_kwargs"
    for key in ("n_layer", "n_head", "n_embd", "context_length"):
        t.copy(f"{kwargs}.{key}", f"model.{key}")
    defaults = MODEL_DEFAULTS.get(module or "", {})

    def value(key: str) -> Any:
        return t.get(f"{kwargs}.{key}", defaults.get(key, MISSING))

    if module == "nanogpt":
        biases(t, value, ("mlp_bias", "attn_proj_bias", "layer_norm_bias"))
        for key in ("attn_dropout", "resid_dropout", "mlp_dropout", "embed_dropout"):
            t.copy(f"{kwargs}.{key}", f"model.{key}")
        t.copy(f"{kwargs}.initializer_range", "model.initializer_range")
        t.copy(f"{kwargs}.tie_lm_head", "model.tie_lm_head")
    elif module == "tiny_transformer":
        biases(t, value, ("mlp_bias", "attn_proj_bias"))
        rates = {t.get(f"{kwargs}.{key}", 0.0) for key in ("attn_dropout", "mlp_dropout")}
        if len(rates) > 1:
            t.refuse(f"{kwargs}.attn_dropout", sorted(rates), "tiny_transformer has one dropout rate for both")
        else:
            t.set("model.dropout", rates.pop())
    elif module == "tinyllama":
        t.set("model.n_kv_head", value("n_query_groups"))
        t.set("model.intermediate_size", value("intermediate_size"))
        t.copy(f"{kwargs}.norm_eps", "model.rms_norm_eps")
        t.copy(f"{kwargs}.padding_multiple", "model.pad_vocab_to")
        for key, (accepted, reason) in TINYLLAMA_FIXED.items():
            t.expect(f"{kwargs}.{key}", accepted, reason, defaults.get(key, MISSING))
        norm = t.get(f"{kwargs}._norm_class")
        if norm not in (MISSING, "RMSNorm", "FusedRMSNorm"):
            t.refuse(f"{kwargs}._norm_class", norm, "tinyllama has RMSNorm (Llama); LayerNorm is not built")


def biases(t: Translation, value: Callable[[str], Any], switches: tuple[str, ...]) -> None:
    """nanuGPT's separate bias switches -> our one ``bias``: they must agree; a k/v bias may differ."""
    kwargs = "model.module_kwargs"
    found = {key: value(key) for key in switches}
    if len(set(found.values())) > 1:
        t.refuse(f"{kwargs}.{switches[0]}", found, "our model has one bias switch for all layers; set them alike")
        return
    bias = found[switches[0]]
    t.set("model.bias", bias)
    kv_bias = value("attn_kv_bias")
    if kv_bias != bias:
        t.note(
            f"{kwargs}.attn_kv_bias",
            f"{kv_bias} (nanuGPT's default) while the other biases are {bias}: ours follows `bias`; a k bias "
            "cancels in softmax and a v bias folds into the output projection's, so the functions are the same",
        )


def translate_tokenizer(t: Translation) -> str | None:
    """``tokenizer``: byte, tiktoken, hf, grokking or arithmetic; return our short name."""
    module = module_of(t, "tokenizer")
    kwargs = "tokenizer.module_kwargs"
    if module == "byte":
        t.expect(f"{kwargs}.encoding_name", "utf-8", "the byte tokenizer reads UTF-8 bytes")
        t.set("tokenizer.special_tokens", list(BYTE_SPECIAL_TOKENS))  # nanuGPT's ids 256-259, <EOS> ends a text
    elif module == "tiktoken":
        t.copy(f"{kwargs}.encoding_name", "tokenizer.encoding")
    elif module == "hf":
        t.copy(f"{kwargs}.hf_path", "tokenizer.name_or_path")
        t.implied(f"{kwargs}.token", "implied: set HF_TOKEN in the environment for gated hub repositories")
        t.expect(f"{kwargs}.fix_pad_token", False, "no pad token is added: training never pads")
    elif module == "grokking":
        t.copy(f"{kwargs}.prime", "tokenizer.prime")
    return module


def translate_data(t: Translation, tokenize: Translation | None) -> None:
    """``data``: token files (with their text source), grokking tables or arithmetic problems."""
    module = module_of(t, "data")
    kwargs = "data.module_kwargs"
    batch = t.source.get("training", {}).get("device_batch_size")
    context = t.source.get("model", {}).get("module_kwargs", {}).get("context_length")
    for key, ours, expected in (("device_batch_size", "training", batch), ("context_length", "model", context)):
        found = t.get(f"{kwargs}.{key}")
        if found not in (MISSING, expected):
            t.refuse(f"{kwargs}.{key}", found, f"batches are read with {ours}.{key} ({expected})")
    eval_batch = t.get(f"{kwargs}.eval_batch_size")
    if eval_batch not in (MISSING, batch):
        t.note(f"{kwargs}.eval_batch_size", f"val batches have training.device_batch_size ({batch}) sequences")
    order_seed = t.get(f"{kwargs}.data_loader_seed")
    if order_seed not in (MISSING, None):
        t.set("general.data_seed", order_seed)
    else:
        t.implied(f"{kwargs}.data_loader_seed", "implied: the data order follows general.seed")
    if module == "tokenized":
        tokenized_source(t, tokenize)
    elif module == "grokking":
        prime = t.get(f"{kwargs}.prime")
        t.set("data.dataset", f"grokking_prime{prime}")
        t.set("data.prime", prime)
        if isinstance(prime, int) and prime > FULL_TABLE_PRIME:  # nanuGPT's prime50k
            t.set("data.sampled_examples", GROKKING_SAMPLE)
            t.refuse(
                f"{kwargs}.prime",
                prime,
                f"nanuGPT splits every pair (a, b), about {prime * prime:.1e}; above p = {FULL_TABLE_PRIME:,} we draw "
                f"data.sampled_examples of them, set to {GROKKING_SAMPLE:,} as in params/grokking_prime50k.yaml",
            )
        t.copy(f"{kwargs}.operation", "data.operation")
        train = t.get(f"{kwargs}.training_fraction", 0.5)
        t.set("data.train_fraction", train)
        val = t.get(f"{kwargs}.val_fraction")
        if val not in (MISSING, None) and not math.isclose(val, 1 - train):
            t.refuse(f"{kwargs}.val_fraction", val, "the val split is the rest of the table (1 - training_fraction)")
    elif module == "arithmetic":
        low, high = t.get(f"{kwargs}.min_digits", 1), t.get(f"{kwargs}.max_digits", 1)
        t.set("data.dataset", f"arithmetic_mul{low}to{high}")
        t.set("data.min_digits", low)  # both operands of each length, as nanuGPT writes them
        t.set("data.digits", high)
        samples = t.get(f"{kwargs}.max_samples")
        if samples is not MISSING:  # nanuGPT: up to max_samples per length
            t.set("data.train_problems", samples * (high - low + 1))
            t.note(f"{kwargs}.max_samples", "per length here too; val problems are data.val_problems, not half")


def tokenized_source(t: Translation, tokenize: Translation | None) -> None:
    """``tokenized_*_path`` -> ``data.dataset``; the text source from ``tokenize`` or ``KNOWN_SOURCES``."""
    kwargs = "data.module_kwargs"
    train_path = t.get(f"{kwargs}.tokenized_train_path")
    t.implied(f"{kwargs}.tokenized_val_path", "implied: DATA_ROOT/<dataset>/<tokenizer>/val.bin")
    t.implied(f"{kwargs}.dtype", "implied: meta.json records uint16 or uint32, whichever the vocabulary needs")
    test_path = t.get(f"{kwargs}.tokenized_test_path")
    match = TOKENIZED_PATH.search(str(train_path)) if train_path is not MISSING else None
    if match is None:
        t.refuse(f"{kwargs}.tokenized_train_path", train_path, "expected .../tokenized/<dataset>/<tokenizer>/*.bin")
        return
    dataset = match["dataset"]
    t.set("data.dataset", dataset)
    t.note(
        f"{kwargs}.tokenized_train_path",
        f"the tokenize stage writes DATA_ROOT/{dataset}/<tokenizer>/ with its meta.json (nanuGPT's .bin are not read)",
    )
    if tokenize is not None:
        translate_tokenize_data(tokenize, match.group(0).rsplit("/", 1)[0])
        t.result.tree["data"].update(tokenize.result.tree.get("data", {}))
    elif dataset in KNOWN_SOURCES:
        for key, value in KNOWN_SOURCES[dataset].items():
            t.set(f"data.{key}", value)
    else:
        t.refuse(f"{kwargs}.tokenized_train_path", train_path, f"no known text for {dataset!r}: pass --tokenize")
    if test_path in (MISSING, None):
        return
    source = str(t.result.tree.get("data", {}).get("source", ""))
    if source.startswith("hf:") and t.result.tree["data"].get("hf", {}).get("test_split", "test") is not None:
        t.note(f"{kwargs}.tokenized_test_path", "test.bin is the dataset's own test split (data.hf.test_split)")
    else:
        t.refuse(
            f"{kwargs}.tokenized_test_path",
            test_path,
            "a text corpus has no test split of its own: set data.test_fraction to hold out its end",
        )


def translate_tokenize_data(t: Translation, folder: str) -> None:
    """A tokenize config's ``data`` keys -> our ``tokenized`` source options; its output must be ``folder``."""
    out = t.get("data.tokenized_out_dir")
    if out is MISSING or not str(out).rstrip("/").endswith(folder):
        t.refuse(
            "data.tokenized_out_dir", out, f"the train config reads {folder}; pass the tokenize config that writes it"
        )
    name = t.get("data.hf_name_path")
    files = t.get("data.hf_data_files")
    if name == "text" and isinstance(files, dict) and list(files) == ["train"] and len(files["train"]) == 1:
        t.set("data.source", files["train"][0])
    elif name not in (MISSING, None, "text") and files in (MISSING, None):
        t.set("data.source", f"hf:{name}")
        t.note(
            "data.hf_name_path",
            "read with datasets.load_dataset: a hub name, or a folder of data files (not a save_to_disk folder)",
        )
    else:
        t.refuse("data.hf_name_path", {"hf_name_path": name, "hf_data_files": files}, "one text file or one dataset")
    hf: dict[str, Any] = {}
    for theirs, ours in (
        ("hf_dataset_name", "config"),
        ("train_split", "split"),
        ("val_split", "val_split"),
        ("text_column", "text_field"),
    ):
        value = t.get(f"data.{theirs}")
        if value not in (MISSING, None):
            hf[ours] = value
    if hf:
        t.set("data.hf", hf)
    val = t.get("data.val_fraction")
    if val not in (MISSING, None):
        t.set("data.val_fraction", val)
    for key, reason in (
        ("test_split", "no test split"),
        ("test_fraction", "no test split"),
        ("hf_sample_by", "the text is read as one stream, not as documents split by line or paragraph"),
        ("hf_data_dir", "no data_dir of a hub dataset"),
        ("hf_revision", "the hub's main revision is read"),
        ("hf_cache_dir", "set HF_HOME to place the datasets cache"),
    ):
        value = t.get(f"data.{key}")
        if value not in (MISSING, None):
            t.refuse(f"data.{key}", value, reason)
    t.implied("data.data_loader_seed", "implied: the tokenize stage is deterministic")


def translate_training(t: Translation) -> None:
    """``training``: steps and batch sizes, the same names."""
    for key in ("max_steps", "device_batch_size", "global_batch_size", "grad_clip", "log_every"):
        t.copy(f"training.{key}", f"training.{key}")
    t.implied("training.enable_train_log", "implied: a log line every training.log_every steps")


def translate_optimizer(t: Translation) -> None:
    """``optimizer``: adamw, adamw_nanogpt or muon; ``learning_rate`` -> ``lr``."""
    module = module_of(t, "optimizer")
    kwargs = "optimizer.module_kwargs"
    if module == "muon":
        translate_muon(t)
        return
    t.copy(f"{kwargs}.learning_rate", "optimizer.lr")
    if module in ("adamw", "adamw_nanogpt"):
        for key in ("weight_decay", "eps", "beta1", "beta2"):
            t.copy(f"{kwargs}.{key}", f"optimizer.{key}")
    t.expect(f"{kwargs}.zero_stage", 0, "no ZeRO-1 optimizer-state sharding here")


def translate_muon(t: Translation) -> None:
    """nanuGPT's muon (its get_optim defaults included) -> ours: Muon for matrices, AdamW for the rest."""
    kwargs = "optimizer.module_kwargs"

    def value(key: str) -> Any:
        return t.get(f"{kwargs}.{key}", MUON_DEFAULTS[key])

    for theirs, ours in MUON_KEYS.items():
        found = value(theirs)
        t.set(f"optimizer.{ours}", list(found) if isinstance(found, tuple) else found)
    head, scalars = value("head_params_lr"), value("scalar_params_lr")
    if head != scalars:
        t.refuse(f"{kwargs}.head_params_lr", {"head": head, "scalars": scalars}, "one optimizer.adamw_lr for both")
    else:
        t.set("optimizer.adamw_lr", head)


def translate_scheduler(t: Translation) -> None:
    """``scheduler``: ``warmup_iters`` -> ``warmup_steps``, ``end_factor`` -> ``min_lr_ratio``, cooldowns, lr range."""
    module = module_of(t, "scheduler")
    kwargs = "scheduler.module_kwargs"
    max_steps = t.source.get("training", {}).get("max_steps")
    for key in ("max_iters", "max_steps"):
        value = t.get(f"{kwargs}.{key}")
        if value in (max_steps, None):
            t.note(f"{kwargs}.{key}", "implied: schedules span training.max_steps")
        elif value is not MISSING:
            t.refuse(f"{kwargs}.{key}", value, f"schedules span training.max_steps ({max_steps})")
    t.copy(f"{kwargs}.warmup_iters", "scheduler.warmup_steps")
    t.copy(f"{kwargs}.end_factor", "scheduler.min_lr_ratio")
    if module == "constant":
        t.copy(f"{kwargs}.cooldown_iters", "scheduler.cooldown_steps")
        t.copy(f"{kwargs}.cooldown_frac", "scheduler.cooldown_steps", lambda frac: int(frac * max_steps))
    elif module == "lr_range_test":
        coeff = t.get(f"{kwargs}.range_coeff", 5.0)
        lr = t.result.tree.get("optimizer", {}).get("lr")
        if lr is not None:  # nanuGPT: lr * exp(coeff * (step / max_steps - 0.5))
            t.set("scheduler.min_lr", lr * math.exp(-coeff / 2))
            t.set("scheduler.max_lr", lr * math.exp(coeff / 2))


def translate_components(t: Translation) -> None:
    """``loss`` and ``scaler``; nanuGPT's keller scaler takes its norm from ``training.grad_clip``."""
    modules = {section: module_of(t, section) for section in ("loss", "scaler")}
    for section in modules:
        kwargs = t.get(f"{section}.module_kwargs", {})
        if kwargs:
            t.refuse(f"{section}.module_kwargs", kwargs, f"nanuGPT's {section} functions take no options")
    if modules["scaler"] == "keller":  # nanuGPT's keller scaler rescales each gradient to a norm of training.grad_clip
        clip = t.result.tree.get("training", {}).get("grad_clip", 1.0)
        if clip > 0:
            t.set("scaler.target_norm", clip)
            t.set("training.grad_clip", 0.0)
            t.note("training.grad_clip", f"with keller_scaler: scaler.target_norm {clip} (each gradient's norm)")
        else:
            t.refuse("training.grad_clip", clip, "0 with keller_scaler leaves gradients as they are: use scaler amp")


def translate_eval(t: Translation) -> None:
    """``eval`` and ``generate``: evaluation counts, checkpoint policy, the checkpoint to sample from."""
    t.copy("eval.eval_every", "eval.eval_every")
    iters = t.get("eval.eval_iters")
    if iters is None and t.result.tree.get("data", {}).get("module") not in ("grokking", "arithmetic"):
        t.refuse("eval.eval_iters", iters, "null (the whole val split) is for grokking and arithmetic: set a count")
    elif iters is not MISSING:
        t.set("eval.eval_iters", iters)
    t.implied("eval.save_checkpoint", "implied: last.pt is always written (evaluate, generate and export read it)")
    t.expect("eval.checkoint_after", 0, "checkpoints are written from the first training.checkpoint_every")
    hours = t.get("eval.checkpoint_every_hr")
    if hours == 0:  # nanuGPT saves once more than 0 hours have passed since the last save: at every step
        t.set("training.checkpoint_every", 1)
        t.note("eval.checkpoint_every_hr", "0 saves at every step: training.checkpoint_every 1")
    elif hours not in (MISSING, None):
        t.set("training.checkpoint_every_min", hours * 60)
    t.implied("eval.checkpoint_keep_best", "implied: best.pt is kept beside the last training.keep_last step files")
    t.implied("generate.checkpoint_path", "implied: generate reads OUT_DIR/model")
    name = t.get("generate.checkpoint_name")
    if name is not MISSING:
        choice = {None: "last", "checkpoint_best.pt": "best"}.get(name)
        t.set("generate.checkpoint", choice or f"{t.get('generate.checkpoint_path', '.')}/{name}")


def import_nanugpt(path: Path, tokenize_path: Path | None = None) -> Imported:
    """Translate the nanuGPT config at ``path`` (and the tokenize config at ``tokenize_path``)."""
    result = Imported()
    source = read(path)
    if "training" not in source:
        result.refused.append(f"{path}: a tokenize config: pass it with --tokenize beside the train config")
        return result
    t = Translation(source, result)
    tokenize = Translation(read(tokenize_path), Imported()) if tokenize_path is not None else None
    translate_general(t)
    translate_model(t)
    translate_tokenizer(t)
    translate_data(t, tokenize)
    translate_training(t)
    translate_optimizer(t)
    translate_scheduler(t)
    translate_components(t)
    translate_eval(t)
    result.refused += [f"{key}: {t.get(key)!r}: no counterpart here" for key in t.unread()]
    if tokenize is not None:
        check_tokenizer(t, tokenize)
        result.notes += [f"{tokenize_path}: {line}" for line in tokenize.result.notes]
        result.refused += [f"{tokenize_path}: {line}" for line in tokenize.result.refused]
    try:
        result.params = validate_params(result.tree, str(path), schema=PipelineParams)  # type: ignore[assignment]
    except ParamsError as exc:
        result.refused += [f"our schema: {line.split(': ', 1)[-1]}" for line in exc.problems]
    return result


def check_tokenizer(train: Translation, tokenize: Translation) -> None:
    """The tokenize config's tokenizer must be the train config's; its general/logging keys are read as notes."""
    mine = Translation(tokenize.source, Imported())
    translate_tokenizer(mine)
    if mine.result.tree.get("tokenizer") != train.result.tree.get("tokenizer"):
        tokenize.refuse("tokenizer", mine.result.tree.get("tokenizer"), "the train config has another tokenizer")
    translate_general(tokenize)
    tokenize.read |= mine.read
    tokenize.result.tree.pop("general", None)
    tokenize.result.refused += [f"{key}: {tokenize.get(key)!r}: no counterpart here" for key in tokenize.unread()]


def read(path: Path) -> dict[str, Any]:
    """A nanuGPT config with its includes and copies resolved (strings as written)."""
    try:
        return load_unexpanded(path)
    except ConfigError as exc:
        raise ParamsError(exc.problems) from None
