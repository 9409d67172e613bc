"""``hf_gpt2`` and ``hf_llama``: Hugging Face ``transformers`` models trained by our loop.

``GPT2LMHeadModel`` and ``LlamaForCausalLM`` are built from params, or loaded
from ``pretrained``: a local folder written by ``save_pretrained`` or by
``python -m stages.export``. Either way the transformers model is wrapped in
:class:`HFCausalLM`, which maps token ids (B, T) to logits (B, T, V) like our
own models, so training, loss, evaluation and generation are unchanged. The
vocabulary is padded to a multiple of ``pad_vocab_to`` as in ``nanogpt``.

With ``pretrained``, params stay an explicit record of the model: the
architecture options must equal the folder's ``config.json`` (a mismatch is an
error naming the value to set), and its vocabulary must hold the data's.
Needs the ``transformers`` package (``pip install 'nanugpt[hf]'``).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import Field, field_validator

from nanugpt.config.schema import ModelOptions, Problem, heads_divide_width
from nanugpt.errors import UserError
from nanugpt.models.base import CausalLM, MasksDocuments, padded_vocab
from nanugpt.models.layers import kv_heads_divide_heads, swiglu_width


def import_transformers(user: str) -> ModuleType:
    """The ``transformers`` package, or an error saying that ``user`` needs it and how to install it."""
    try:
        import transformers
    except ImportError:
        raise UserError(f"{user} needs the transformers package: pip install 'nanugpt[hf]'") from None
    return transformers


def rope_theta(config: Any) -> float | None:
    """A Llama config's RoPE base (``rope_parameters`` in transformers >= 5, ``rope_theta`` before)."""
    return (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))


# The first transformers whose GPT-2 and Llama take a 4-D attention mask as it is (``masking_utils``)
MASK_4D_SINCE = (4, 53)


class HFCausalLM(MasksDocuments, CausalLM):
    """A transformers causal LM as our models look: token ids (B, T) -> logits (B, T, V); after ``mask_documents``
    its attention stops at document boundaries (a 4-D boolean ``attention_mask``, and ``position_ids`` that
    restart per document)."""

    def __init__(self, hf_model: nn.Module, vocab_size: int, context_length: int):
        config = hf_model.config
        super().__init__(
            vocab_size=vocab_size,
            padded_vocab=config.vocab_size,
            context_length=context_length,
            n_layer=config.num_hidden_layers,
            n_embd=config.hidden_size,
        )
        self.hf = hf_model

    def transformer_blocks(self) -> list[nn.Module]:
        """The decoder layers of the transformers model: ``h`` (GPT-2) or ``layers`` (Llama) of its base model."""
        base = self.hf.base_model
        return list(getattr(base, "h", None) or getattr(base, "layers", None) or [])

    def mask_documents(self, eot_id: int, *, restart_positions: bool) -> None:
        """``MasksDocuments.mask_documents``, refused where transformers is too old to take a 4-D mask."""
        version = import_transformers("data.packing: documents").__version__
        if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) < MASK_4D_SINCE:
            raise UserError(
                f"data.packing: documents with model.module {self.hf.config.model_type} needs transformers >= "
                f"{'.'.join(map(str, MASK_4D_SINCE))} (a 4-D attention mask), found {version}: upgrade it, or use "
                "data.packing: none"
            )
        super().mask_documents(eot_id, restart_positions=restart_positions)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of token ids (B, T); V is the transformers model's (padded) vocabulary."""
        self.check_length(idx.size(1))
        documents = self.documents(idx)
        if documents is None:
            return self.hf(input_ids=idx, use_cache=False).logits  # (B, T, V)
        positions = {} if documents.positions is None else {"position_ids": documents.positions}  # (B, T)
        return self.hf(input_ids=idx, attention_mask=documents.attn_mask, use_cache=False, **positions).logits


class HFModelOptions(ModelOptions):
    """Options shared by the transformers-backed models."""

    hf_model_type: ClassVar[str]  # transformers' name for the architecture (config.json's model_type)
    hf_class: ClassVar[str]  # the transformers class that is built

    n_layer: int = Field(gt=0, description="transformer blocks")
    n_head: int = Field(gt=0, description="attention heads; must divide n_embd")
    n_embd: int = Field(gt=0, description="embedding width")
    pad_vocab_to: int = Field(64, gt=0, description="round the vocabulary up to a multiple of this (new models)")
    pretrained: str | None = Field(
        None,
        description="local folder written by save_pretrained or stages.export to start from; "
        "its config.json must match these options",
    )

    def new_config(self, transformers: ModuleType, vocab_size: int) -> Any:
        """The transformers config of a new model with ``vocab_size`` entries."""
        raise NotImplementedError

    def architecture(self, config: Any) -> dict[str, tuple[Any, Any]]:
        """Each architecture option's value here and in ``config``: ``{name: (ours, config's)}``."""
        raise NotImplementedError

    def max_context(self, config: Any) -> int | None:
        """The most positions the pretrained model can embed, or None when unbounded."""
        return None

    def overrides(self) -> dict[str, Any]:
        """Training-time settings applied to a pretrained config (dropout)."""
        return {}

    def check(self, params: Any) -> list[Problem]:
        return heads_divide_width(self.n_embd, self.n_head)

    def build(self, vocab_size: int) -> HFCausalLM:
        transformers = import_transformers(f"model.module {self.module!r}")
        if self.pretrained is None:
            padded = padded_vocab(vocab_size, self.pad_vocab_to)
            hf_model = getattr(transformers, self.hf_class)(self.new_config(transformers, padded))
        else:
            hf_model = self.load_pretrained(transformers, vocab_size)
        return HFCausalLM(hf_model, vocab_size, self.context_length)

    def load_pretrained(self, transformers: ModuleType, vocab_size: int) -> nn.Module:
        """The model saved in ``pretrained``, after checking it against these options and the data."""
        folder = Path(self.pretrained or "").expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(
                f"model.pretrained: {folder} has no config.json; give a folder written by save_pretrained "
                "or by python -m stages.export"
            )
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type != self.hf_model_type:
            raise UserError(
                f"model.pretrained: {folder} holds a {config.model_type!r} model, but model.module "
                f"{self.module!r} loads {self.hf_model_type!r} models"
            )
        problems = [
            f"model.{name} is {ours!r} but {folder}/config.json has {theirs!r}: set model.{name}: {theirs}"
            for name, (ours, theirs) in self.architecture(config).items()
            if ours != theirs
        ]
        limit = self.max_context(config)
        if limit is not None and self.context_length > limit:
            problems.append(f"model.context_length {self.context_length} exceeds the {limit} positions of {folder}")
        if config.vocab_size < vocab_size:
            problems.append(
                f"{folder} has {config.vocab_size} vocabulary entries, fewer than the data's {vocab_size}: "
                "tokenize with the tokenizer the model was trained with"
            )
        if problems:
            raise UserError("; ".join(problems))
        config.update(self.overrides())
        try:
            hf_model, info = getattr(transformers, self.hf_class).from_pretrained(
                folder, config=config, local_files_only=True, output_loading_info=True
            )
        except OSError as exc:
            raise UserError(f"model.pretrained: cannot load the weights in {folder}: {exc}") from None
        missing = sorted(info["missing_keys"])
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise UserError(f"model.pretrained: {folder} lacks weights for {', '.join(missing[:3])}{more}")
        return hf_model.float()  # float32 master weights; autocast gives the training dtype


class HFGPT2Options(HFModelOptions):
    """transformers GPT2LMHeadModel: learned positions, pre-LayerNorm, GELU MLP, tied head."""

    hf_model_type = "gpt2"
    hf_class = "GPT2LMHeadModel"

    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after attention, MLP and embeddings")

    def new_config(self, transformers: ModuleType, vocab_size: int) -> Any:
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=self.context_length,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            bos_token_id=None,
            eos_token_id=None,
            **self.overrides(),
        )

    def architecture(self, config: Any) -> dict[str, tuple[Any, Any]]:
        return {
            "n_layer": (self.n_layer, config.n_layer),
            "n_head": (self.n_head, config.n_head),
            "n_embd": (self.n_embd, config.n_embd),
        }

    def max_context(self, config: Any) -> int:
        return config.n_positions

    def overrides(self) -> dict[str, Any]:
        return {"resid_pdrop": self.dropout, "embd_pdrop": self.dropout, "attn_pdrop": self.dropout}


class HFLlamaOptions(HFModelOptions):
    """transformers LlamaForCausalLM: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention (tinyllama's options)."""

    hf_model_type = "llama"
    hf_class = "LlamaForCausalLM"

    n_kv_head: int | None = Field(None, gt=0, description="key/value heads (grouped-query attention); null = n_head")
    intermediate_size: int | None = Field(
        None, gt=0, description="SwiGLU hidden width; null = 8/3 n_embd rounded up to a multiple of 64"
    )
    rope_theta: float = Field(10000.0, gt=0, description="rotary embedding base (Llama 2: 1e4, Llama 3: 5e5)")
    rms_norm_eps: float = Field(1e-5, gt=0, description="epsilon of every RMSNorm")
    tie_word_embeddings: bool = Field(False, description="share the token embedding with the output head")

    _kv_heads_divide_heads = field_validator("n_kv_head")(kv_heads_divide_heads)

    @property
    def mlp_width(self) -> int:
        """The SwiGLU hidden width: ``intermediate_size`` or its Llama-like default."""
        return swiglu_width(self.n_embd, self.intermediate_size)

    def new_config(self, transformers: ModuleType, vocab_size: int) -> Any:
        return transformers.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.n_embd,
            intermediate_size=self.mlp_width,
            num_hidden_layers=self.n_layer,
            num_attention_heads=self.n_head,
            num_key_value_heads=self.n_kv_head or self.n_head,
            max_position_embeddings=self.context_length,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=None,
            eos_token_id=None,
        )

    def architecture(self, config: Any) -> dict[str, tuple[Any, Any]]:
        return {
            "n_layer": (self.n_layer, config.num_hidden_layers),
            "n_head": (self.n_head, config.num_attention_heads),
            "n_kv_head": (self.n_kv_head or self.n_head, config.num_key_value_heads),
            "n_embd": (self.n_embd, config.hidden_size),
            "intermediate_size": (self.mlp_width, config.intermediate_size),
            "rope_theta": (self.rope_theta, rope_theta(config)),
            "rms_norm_eps": (self.rms_norm_eps, config.rms_norm_eps),
            "tie_word_embeddings": (self.tie_word_embeddings, config.tie_word_embeddings),
        }
