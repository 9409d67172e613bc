"""The params schema: every section of a params file, and the base class of each kind of component.

A params file is a ``Params``: fixed sections (``general``, ``training``, ``eval``, ...) and component
sections (``data``, ``tokenizer``, ``model``, ``optimizer``, ``scheduler``, ``loss``, ``scaler``), each
validated against the options class its ``module:`` names (``nanugpt.config.registry``).

Every component (model, optimizer, tokenizer, ...) declares its options as a
pydantic model that subclasses the base of its kind below, next to the code
that uses them, and builds itself with ``build(...)``. A params section such
as ``optimizer:`` names the component in ``module:`` and holds its options
beside it::

    optimizer:
      module: adamw_nanogpt
      lr: 1.0e-3

A rule that involves another section (the keller scaler needs ``training.grad_clip``
0, the grokking task's prime must be the tokenizer's) belongs to the component it
concerns: its ``check(params)`` returns the problems, and ``validate_params``
(``nanugpt.config.params``) calls the hook of every component section, so a user's
own component (named by import path) is checked the same way.

This module imports nothing heavy, so params can be validated cheaply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator

if TYPE_CHECKING:  # the types that build() returns, named without importing torch
    import torch

    from nanugpt.config.protocols import LanguageModel, Loss, Scaler, Schedule
    from nanugpt.config.token_meta import TokenMeta

Problem = tuple[str, str]  # (dotted key, message), e.g. ("training.grad_clip", "must be 0 with ..., got 1.0")


class ComponentOptions(BaseModel):
    """Options shared by every component: the registered name or import path."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    module: str = Field(description="registered short name, or a dotted import path 'pkg.mod:Options'")

    # Keys that change how the component works but never the numbers of a run (how its input is checked, how
    # fast it is prepared): a checkpoint resumes across a change of them (``Params.digest``).
    numerics_neutral: ClassVar[tuple[str, ...]] = ()

    def check(self, params: Params) -> list[Problem]:
        """Problems of these options in the context of the whole, otherwise valid, ``params``; none by default."""
        return []


@dataclass(frozen=True)
class BatchShare:
    """One process's share of each step's global batch: every data component slices ranks with it.

    A step draws ``global_rows`` rows; process ``rank`` of ``world_size`` takes micro-batches
    ``rank, rank + world_size, ...`` of ``rows`` rows each, ``micro_steps`` of them per step.
    """

    rows: int
    global_rows: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.rows < 1 or self.global_rows % (self.rows * self.world_size) or not 0 <= self.rank < self.world_size:
            raise ValueError(f"{self}: global_rows must be a positive multiple of rows x world_size, rank < world_size")

    @property
    def micro_steps(self) -> int:
        """Micro-batches per step on each process."""
        return self.global_rows // (self.rows * self.world_size)

    def first_row(self, micro_step: int) -> int:
        """The position in the step's global batch of this process's ``micro_step``'s first row."""
        return (micro_step * self.world_size + self.rank) * self.rows


class DataOptions(ComponentOptions):
    """A dataset (``data:`` section): the tokenize stage materializes it, training draws batches from it."""

    # True where the val batches walk the split in order and have a ``whole_split`` count (the batches that cover it
    # once): ``eval.eval_iters: null`` then evaluates every val example once
    walks_val_split: ClassVar[bool] = False

    dataset: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="dataset name (letters, digits, '_', '-', '.'); token files go to DATA_ROOT/<dataset>/<tokenizer>/",
    )

    # Keys that shape the batches drawn from the token files, or how they are made, but never the files themselves:
    # changing one re-runs no tokenize (``tokens_settings``, which the source stage records).
    not_in_tokens: ClassVar[tuple[str, ...]] = ()

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Path, raw_dir: Path) -> TokenMeta:
        """Write the dataset's token files and then ``meta.json`` (``nanugpt.config.token_meta.write_meta``) into
        ``out_dir``; return the meta. ``raw_dir`` is where downloads may be kept (``DATA_ROOT/<dataset>/raw``)."""
        raise NotImplementedError

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
    ) -> Any:
        """A source of (inputs, targets) micro-batches of ``split`` for this process's ``share`` (see
        ``nanugpt.config.protocols.Batches``), or None when the split is empty. ``meta`` is ``read_meta(data_dir)``."""
        raise NotImplementedError


def tokens_settings(data: DataOptions) -> dict[str, Any]:
    """The options the token files of ``data`` depend on: every key but its ``not_in_tokens``, and the same within
    the data sections it holds (a mixture's sources)."""
    plain: dict[str, Any] = {}
    for name in type(data).model_fields:
        if name in data.not_in_tokens:
            continue
        value = getattr(data, name)
        if isinstance(value, DataOptions):
            plain[name] = tokens_settings(value)
        elif isinstance(value, list) and value and all(isinstance(item, DataOptions) for item in value):
            plain[name] = [tokens_settings(item) for item in value]
        else:
            plain[name] = data.model_dump(mode="json", include={name})[name]
    return plain


class TokenizerOptions(ComponentOptions):
    """A text <-> token ids codec (``tokenizer:`` section)."""

    def build(self, vocab: list[str] | None = None) -> Any:
        """Return a tokenizer; ``vocab`` is the saved vocabulary of tokenizers fitted on a corpus."""
        raise NotImplementedError


class ModelOptions(ComponentOptions):
    """A causal language model (``model:`` section)."""

    context_length: int = Field(gt=0, description="tokens of context the model sees")

    def build(self, vocab_size: int) -> LanguageModel:
        """Return an ``nn.Module`` (``nanugpt.config.protocols.LanguageModel``) that maps token ids (B, T) to logits
        (B, T, V) of ``vocab_size`` (or more, padded) tokens; decoders (``DecoderMixin``) also give their final
        hidden states (``forward(idx, hidden_only=True)``) and their head (``linear_head()``), so the loss can
        apply the head itself."""
        raise NotImplementedError


class OptimizerOptions(ComponentOptions):
    """An optimizer (``optimizer:`` section)."""

    lr: float = Field(gt=0, description="peak learning rate")

    def build(self, model: torch.nn.Module, device_type: str) -> torch.optim.Optimizer:
        """Return a ``torch.optim.Optimizer`` over the model's parameters."""
        raise NotImplementedError


class SchedulerOptions(ComponentOptions):
    """A learning-rate schedule (``scheduler:`` section)."""

    def build(self, max_steps: int, base_lr: float) -> Schedule:
        """Return a ``nanugpt.config.protocols.Schedule``, whose ``factor(step)`` multiplies the peak lr ``base_lr``
        (``optimizer.lr``). A ``ReportingSchedule`` (an lr range test) also has ``report(lrs, losses)``, written
        to ``train_summary.json`` after training, and its run ends rather than fails when the loss diverges.
        """
        raise NotImplementedError


class LossOptions(ComponentOptions):
    """A training loss (``loss:`` section)."""

    def build(self) -> Loss:
        """Return a ``nanugpt.optim.losses.Loss``: ``loss(logits, targets) -> scalar`` plus evaluation metrics."""
        raise NotImplementedError


class ScalerOptions(ComponentOptions):
    """A gradient scaler (``scaler:`` section)."""

    def build(self, device_type: str, dtype: str) -> Scaler:
        """Return a ``nanugpt.config.protocols.Scaler``: torch.amp.GradScaler's interface."""
        raise NotImplementedError


def heads_divide_width(n_embd: int, n_head: int) -> list[Problem]:
    """The problem of attention heads that do not split ``model.n_embd`` evenly (for models' ``check``)."""
    if n_embd % n_head:
        return [("model.n_embd", f"must be divisible by model.n_head ({n_head}), got {n_embd}")]
    return []


KIND_BASES: dict[str, type[ComponentOptions]] = {
    "data": DataOptions,
    "tokenizer": TokenizerOptions,
    "model": ModelOptions,
    "optimizer": OptimizerOptions,
    "scheduler": SchedulerOptions,
    "loss": LossOptions,
    "scaler": ScalerOptions,
}


class Section(BaseModel):
    """A fixed params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GeneralParams(Section):
    project_name: str = Field("nanugpt", description="project name (W&B project)")
    run_name: str = Field("run", description="name of this run (W&B run name, log lines)")
    seed: int = Field(
        42, ge=0, description="seed of model init and dropout, and of the train batches' order unless data_seed is set"
    )
    data_seed: int | None = Field(
        None,
        ge=0,
        description="seed of the train batches' order alone (a stream's shuffle too); null = general.seed. A seed "
        "sweep then varies initialisation and data order apart; val batches always follow general.seed",
    )
    verify_checkpoints: Literal["auto", "full", "size"] = Field(
        "auto",
        description="how a checkpoint (and meta.json) is checked against its checksum when loaded: 'full' hashes "
        "it, 'size' compares sizes only, 'auto' hashes files up to 1 GiB and compares the size of larger ones",
    )
    device_type: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks cuda when available")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="autocast dtype of forward/backward; float32 on CPUs without bf16 hardware"
    )
    torch_compile: bool = Field(
        False,
        description="compile the model with torch.compile; runs then agree to rounding, not bitwise "
        "(inductor kernels), unlike eager CPU runs",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="intra-op CPU threads of each process; null = what it was given: OMP_NUM_THREADS (Snakemake "
        "sets it to the rule's threads), a Slurm job's cores or the usable cores, shared by the node's processes "
        "(pipeline/threads.py). CPU runs are bitwise the same at one count and agree to rounding at another",
    )
    reproducible: Literal["machine", "strict"] = Field(
        "machine",
        description="'machine': the CPU's fastest kernels, bitwise the same on one machine at one thread count and "
        "equal to rounding on another; 'strict': the train stage runs the kernels every x86-64 CPU has "
        "(ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE, ONEDNN_MAX_CPU_ISA=SSE41, set by pipeline.launch), "
        "bitwise the same on CPUs of other generations, about 2.5x slower; needs device_type cpu, dtype float32, "
        "torch_compile false, threads 1 (docs/reproducibility.md)",
    )

    @field_validator("reproducible")
    @classmethod
    def _strict_is_eager_cpu(cls, value: str, info: ValidationInfo) -> str:
        wanted = {"device_type": "cpu", "dtype": "float32", "torch_compile": False, "threads": 1}
        wrong = [f"general.{key} {str(want).lower()}" for key, want in wanted.items() if info.data.get(key) != want]
        if value == "strict" and wrong:
            raise ValueError(f"strict runs eager float32 on the CPU at one thread: set {', '.join(wrong)} with it")
        return value

    @property
    def order_seed(self) -> int:
        """The seed of the train batches' order: ``data_seed``, else ``seed``."""
        return self.seed if self.data_seed is None else self.data_seed


class ProfileParams(Section):
    """A ``torch.profiler`` window over a few optimizer steps of a training run (``training.profile``).

    The window opens when step ``start_step`` completes and records steps ``start_step + 1`` to
    ``start_step + steps``; the trace goes to ``OUT_DIR/profile/`` (``nanugpt.train.profiler``). None of these
    keys changes a run's numbers: a checkpoint resumes across a change of them.
    """

    enabled: bool = Field(False, description="profile a window of optimizer steps into OUT_DIR/profile/")
    start_step: int = Field(
        5,
        ge=1,
        description="the window opens when this optimizer step completes (the steps before it warm up); a run "
        "resumed at or after it does not profile",
    )
    steps: int = Field(
        5,
        gt=0,
        description="optimizer steps in the window: start_step + 1 to start_step + steps; a window cut short by "
        "training.max_steps or a stop keeps the steps it recorded",
    )
    memory: bool = Field(
        False,
        description="record memory too: allocation events in the trace (profile_memory) and, on CUDA, a "
        "snapshot for pytorch.org/memory_viz (memory-rank<R>-step<S>.pickle)",
    )
    ranks: Literal["main", "all"] = Field(
        "main", description="'main': rank 0 profiles; 'all': every rank writes its own trace"
    )


class SpikeParams(Section):
    action: Literal["none", "rollback", "skip", "stop"] = Field(
        "none",
        description="what a loss spike does: 'rollback' reloads the last checkpoint and skips the batches from it to "
        "the spike; 'skip' leaves out the update of a step whose loss spikes (checked every step: one host sync "
        "per step); 'stop' ends the run with an error; 'none' checks nothing",
    )
    factor: float = Field(
        2.0, gt=1, description="a step's train loss is a spike above factor x the mean of the window's losses"
    )
    window: int = Field(50, gt=0, description="the recent steps whose mean loss a step is compared with")
    max_rollbacks: int = Field(3, ge=1, description="rollbacks in one run before a further spike stops it")

    @field_validator("action", mode="before")
    @classmethod
    def _off_is_none(cls, value: object) -> object:
        if value is False:  # YAML reads an unquoted off, no or false as the boolean
            raise ValueError("write none to switch the check off (YAML reads off as false)")
        return value


class TrainingParams(Section):
    @property
    def last_step(self) -> int:
        """The step this run ends at: ``stop_at`` where set, else ``max_steps``."""
        return self.stop_at or self.max_steps

    max_steps: int = Field(gt=0, description="optimizer steps in the run")
    stop_at: int | None = Field(
        None,
        gt=0,
        description="end this run after this step as if it were the last (validate, checkpoint, summary) while the "
        "schedule still runs over max_steps; another run continues it with training.resume: <its checkpoint> (a "
        "rung of a halving sweep, a shared stable phase); null = max_steps",
    )
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
    async_checkpoint: bool = Field(
        False,
        description="write checkpoints on a background thread while training goes on: a save stops training only "
        "to copy the state into host memory (which then holds one more copy of the model and optimizer); the "
        "save before a signal's exit and the last one still finish before the run ends",
    )
    resume: str = Field(
        "auto", description="'auto': resume from OUT_DIR/checkpoints/last.pt when compatible; 'never'; or a path"
    )
    resume_env: Literal["warn", "strict"] = Field(
        "warn",
        description="a checkpoint saved in another environment (python, torch build, numpy, CPU, threads, packages: "
        "nanugpt/train/environment.py): 'warn' resumes and names what differs, 'strict' refuses to resume it",
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
    spike: SpikeParams = Field(
        SpikeParams(), description="loss-spike recovery (nanugpt/train/spikes.py): off unless 'action' is set"
    )
    profile: ProfileParams = Field(
        ProfileParams(),
        description="a torch.profiler window over a few optimizer steps (Chrome trace, optional memory snapshot)",
    )


# sha256 of the official HellaSwag validation file (rowanz/hellaswag data/hellaswag_val.jsonl, unchanged since 2019),
# as Hugging Face datasets pinned it in datasets/hellaswag/dataset_infos.json (12,246,618 bytes)
HELLASWAG_VAL_SHA256 = "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"


class EvalParams(Section):
    eval_every: int = Field(250, ge=0, description="steps between val evaluations during training; 0 = only at end")
    eval_iters: int | None = Field(
        20,
        gt=0,
        description="fixed val batches per evaluation; null = the whole val split once (data whose val batches walk "
        "the split: grokking, arithmetic)",
    )
    tasks: list[Literal["hellaswag"]] = Field(
        default_factory=list,
        description="benchmarks the evaluate stage scores besides the loss (training too, with tasks_every): hellaswag",
    )
    tasks_every: int = Field(
        0,
        ge=0,
        description="steps between scorings of eval.tasks during training, on the file's first tasks_examples "
        "examples (the curve tasks/hellaswag_acc, plots/tasks.csv); 0 = off",
    )
    tasks_examples: int = Field(
        200, gt=0, description="examples scored at each of those steps: the file's first N, the same every time"
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
    "checkpoint to load: 'last' (OUT_DIR/model/last.pt), 'best' (best.pt, lowest val loss) or a path"
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
        """A sha256 over the values of the given sections or dotted keys, to tell whether two runs compute the same
        numbers; a component's ``numerics_neutral`` keys are left out."""
        plain = self.to_dict()
        for section in COMPONENT_SECTIONS:
            for key in getattr(self, section).numerics_neutral:
                plain[section].pop(key, None)
        subset = {}
        for key in keys:
            node: Any = plain
            for part in key.split("."):
                node = node[part]
            subset[key] = node
        return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()


# What must match for ``resume: auto`` to continue a checkpoint: everything that shapes the numbers
# (not logging, checkpointing or launch settings), so a resumed run equals an uninterrupted one.
RESUME_KEYS = (
    "general.seed",
    "general.data_seed",
    "general.dtype",
    "data",
    "tokenizer",
    "model",
    "optimizer",
    "scheduler",
    "loss",
    "scaler",
    "training.max_steps",
    "training.device_batch_size",
    "training.global_batch_size",
    "training.grad_clip",
)

COMPONENT_SECTIONS = tuple(KIND_BASES)  # the sections whose `module:` names a component


def cross_check(params: Params) -> list[tuple[str, str]]:
    """Problems that involve more than one key and no single component: ``(dotted key, message)`` pairs.

    Rules of one component (its ``check`` hook) live with the component; see ``nanugpt.config.schema``.
    """
    t = params.training
    if t.global_batch_size % t.device_batch_size:
        message = f"must be a multiple of training.device_batch_size ({t.device_batch_size}), got {t.global_batch_size}"
        return [("training.global_batch_size", message)]
    if t.strategy == "fsdp" and params.general.dtype == "float16":
        message = "fsdp does not combine with general.dtype float16 (loss scaling of sharded gradients); use bfloat16"
        return [("training.strategy", message)]
    if t.stop_at is not None and t.stop_at > t.max_steps:
        return [("training.stop_at", f"must be <= training.max_steps ({t.max_steps}), got {t.stop_at}")]
    if t.profile.enabled and t.profile.start_step >= t.max_steps:
        message = f"must be below training.max_steps ({t.max_steps}) for the window to open, got {t.profile.start_step}"
        return [("training.profile.start_step", message)]
    project = params.general.project_name
    if params.logging.wandb and (len(project) > WANDB_PROJECT_MAX or set(project) & set(WANDB_PROJECT_REFUSED)):
        message = (
            f"W&B refuses the project name {project!r} (logging.wandb is on): at most {WANDB_PROJECT_MAX} "
            f"characters, none of {' '.join(WANDB_PROJECT_REFUSED)}"
        )
        return [("general.project_name", message)]
    if params.eval.eval_iters is None and not params.data.walks_val_split:
        message = (
            f"null (the whole val split) needs data whose val batches walk the split (grokking, arithmetic), not "
            f"{params.data.module!r}: set a count of val batches"
        )
        return [("eval.eval_iters", message)]
    if t.spike.action == "rollback" and not (t.checkpoint_every or t.checkpoint_every_min):
        message = (
            "'rollback' needs checkpoints to roll back to: set training.checkpoint_every (or checkpoint_every_min)"
        )
        return [("training.spike.action", message)]
    if params.eval.tasks_every and not params.eval.tasks:
        message = (
            f"is {params.eval.tasks_every} but eval.tasks is empty: name the benchmarks to score during training "
            "(eval.tasks: [hellaswag]) or set eval.tasks_every: 0"
        )
        return [("eval.tasks_every", message)]
    return []


# What W&B refuses in a project name (``wandb.init``'s UsageError), checked at load instead of mid-run.
WANDB_PROJECT_REFUSED = "/\\#?%:"
WANDB_PROJECT_MAX = 128
