"""Hugging Face interchange, offline: hf_gpt2 / hf_llama train in our loop and start from saved folders, and the
export of trained checkpoints loads in transformers with the same logits and the same token ids."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import REPO, TINY_TEXT, killed_at_random, time_in_child, tiny_params, write_params

from nanugpt.checkpoint.store import load_trained_model
from nanugpt.config.params import load_params, validate_params
from nanugpt.config.protocols import Tokenizer
from nanugpt.config.schema import Params
from nanugpt.config.token_meta import read_meta
from nanugpt.data.tokenizers.byte import ByteTokenizer
from nanugpt.data.tokenizers.char import CharTokenizer
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.data.tokenizers.hf import HFTokenizer
from nanugpt.data.tokenizers.tiktoken import TiktokenTokenizer
from nanugpt.errors import UserError
from nanugpt.files.atomic import remove_stale_temporaries
from nanugpt.inference.hf_export import write_tokenizer
from stages import export, tokenize, train

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

GPT2 = {"module": "hf_gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16}
LLAMA = {
    "module": "hf_llama",
    "n_layer": 2,
    "n_head": 4,
    "n_kv_head": 2,
    "n_embd": 32,
    "intermediate_size": 64,
    "context_length": 16,
}


def model_options(section: dict[str, Any]) -> Any:
    """The validated ``model:`` options of ``section`` (through the registry, as params are)."""
    tree = tiny_params("unused.txt")
    tree["model"] = dict(section)
    return validate_params(tree, "test params").model


def trained_run(folder: Path, corpus: Path, steps: int, model: dict[str, Any]) -> tuple[Params, Path, Path]:
    """Tokenize the tiny corpus (char) and train ``model`` for ``steps`` steps in ``folder``."""
    tree = tiny_params(
        corpus,
        training={
            "max_steps": steps,
            "log_every": 1,
            "checkpoint_every": 0,
            "peak_flops": 1e12,
        },  # skips measuring the CPU's matmul speed
        eval={"eval_every": 0},
    )
    tree["model"] = dict(model)
    params = load_params(write_params(folder / "params.yaml", tree))
    data, out = folder / "data", folder / "out"
    tokenize.run(params, data_root=data)
    train.run(params, data_root=data, out_dir=out)
    return params, data, out


def train_losses(out_dir: Path) -> list[float]:
    with open(out_dir / "plots" / "train.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


def tokens(vocab_size: int, seed: int = 0) -> torch.Tensor:
    """(2, 16) random ids of the real (unpadded) vocabulary."""
    return torch.randint(0, vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(folder: Path, ckpt: Path) -> tuple[Any, int]:
    """transformers' model in ``folder`` and our checkpoint agree on the real vocabulary; return (hf model, V)."""
    ours, _, state = load_trained_model(ckpt, torch.device("cpu"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    V, ids = state["vocab_size"], tokens(state["vocab_size"])
    with torch.no_grad():
        theirs, mine = hf(ids).logits, ours(ids)
    assert theirs.shape == mine.shape  # the padded vocabulary is exported
    torch.testing.assert_close(theirs[..., :V], mine[..., :V], atol=1e-5, rtol=0)
    return hf, V


@pytest.fixture(scope="module")
def nanogpt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, Path]:
    """A tiny nanogpt without biases (the zero-bias export path), trained 6 steps on the char corpus."""
    folder = tmp_path_factory.mktemp("nanogpt")
    corpus = folder / "corpus.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    return trained_run(folder, corpus, 6, {**GPT2, "module": "nanogpt", "bias": False})


def test_hf_gpt2_loads_a_save_pretrained_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=None, eos_token_id=None
    )
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path / "saved")
    model = model_options({**GPT2, "pretrained": str(tmp_path / "saved")}).build(60).eval()
    ids = tokens(60)
    with torch.no_grad():
        assert torch.equal(model(ids), reference(ids).logits)
    with pytest.raises(UserError, match=r"model.n_layer is 3 but .*config.json has 2: set model.n_layer: 2"):
        model_options({**GPT2, "n_layer": 3, "pretrained": str(tmp_path / "saved")}).build(60)
    with pytest.raises(UserError, match=r"holds a 'gpt2' model, but model.module 'hf_llama' loads 'llama'"):
        model_options({**LLAMA, "pretrained": str(tmp_path / "saved")}).build(60)


def test_missing_transformers_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    with pytest.raises(UserError, match=r"model.module 'hf_gpt2' needs the transformers package: pip install"):
        model_options(GPT2).build(60)


def test_hf_gpt2_flops_per_token_counts_like_nanogpt() -> None:
    ours = model_options({**GPT2, "module": "nanogpt"}).build(60)
    assert model_options(GPT2).build(60).flops_per_token() == ours.flops_per_token()  # same weights, same formula


@pytest.mark.parametrize("model", [GPT2, LLAMA], ids=["hf_gpt2", "hf_llama"])
def test_hf_models_train_in_our_loop_and_export_as_they_are(
    tmp_path: Path, corpus: Path, model: dict[str, Any]
) -> None:
    params, data, out = trained_run(tmp_path, corpus, 12, model)
    losses = train_losses(out)
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.4, losses
    folder = export.run(params, data_root=data, out_dir=out)
    assert_same_logits(folder, out / "checkpoints" / "last.pt")


def test_nanogpt_export_gives_the_same_logits_and_token_ids(nanogpt_run: tuple[Params, Path, Path]) -> None:
    params, data, out = nanogpt_run
    folder = export.run(params, data_root=data, out_dir=out)
    hf, V = assert_same_logits(folder, out / "checkpoints" / "last.pt")
    assert hf.config.vocab_size == 64 > V  # padded: the char vocabulary of the corpus is smaller
    generated = hf.generate(tokens(V)[:1, :4], max_new_tokens=8, do_sample=False)
    assert int(generated.max()) < V  # generation_config.json suppresses the padded ids

    ours = tokenizer_from_meta(read_meta(data / "tiny" / "char"))
    theirs = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    text = TINY_TEXT[:300]
    ids = ours.encode(text)
    assert theirs.encode(text) == ids and theirs.decode(ids) == text

    # and back: hf_gpt2 starts from the exported folder with the same logits
    back = model_options({**GPT2, "pretrained": str(folder)}).build(V).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(tokens(V)), hf(tokens(V)).logits, atol=1e-6, rtol=0)


TOKENIZER_TEXT = "Naïve café, ünïcödé \u2014 and <|endoftext|> as plain text.\n\n  Spaces, tabs\tand 2024!"


def our_tokenizer(name: str, folder: Path) -> Tokenizer:
    """Tokenizer ``name`` over ``TOKENIZER_TEXT``; ``hf`` loads the char tokenizer's exported files."""
    if name == "char":
        return CharTokenizer.fit(set(TOKENIZER_TEXT))
    if name == "byte":
        return ByteTokenizer(["<|endoftext|>"])
    if name == "tiktoken_gpt2":
        return TiktokenTokenizer("gpt2")
    (folder / "source").mkdir()
    write_tokenizer(our_tokenizer("char", folder), folder / "source", 16)
    return HFTokenizer(str(folder / "source"))


@pytest.mark.parametrize("name", ["char", "byte", "tiktoken_gpt2", "hf"])
def test_exported_tokenizer_files_give_our_ids(tmp_path: Path, name: str) -> None:
    ours = our_tokenizer(name, tmp_path)
    (tmp_path / "hf").mkdir()
    assert write_tokenizer(ours, tmp_path / "hf", 1024)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    ids = ours.encode(TOKENIZER_TEXT)
    assert theirs.encode(TOKENIZER_TEXT) == ids and theirs.decode(ids) == TOKENIZER_TEXT
    assert theirs.eos_token_id == ours.eot_id


def test_tinyllama_export_gives_the_same_logits(tmp_path: Path, corpus: Path) -> None:
    tiny = {**LLAMA, "module": "tinyllama", "tie_word_embeddings": True, "rope_theta": 500000.0}
    params, data, out = trained_run(tmp_path, corpus, 4, tiny)
    folder = export.run(params, data_root=data, out_dir=out)
    hf, V = assert_same_logits(folder, out / "checkpoints" / "last.pt")
    assert hf.config.num_key_value_heads == 2 and hf.config.tie_word_embeddings
    back = (
        model_options({**LLAMA, "tie_word_embeddings": True, "rope_theta": 500000.0, "pretrained": str(folder)})
        .build(V)
        .eval()
    )  # and back, as hf_llama
    with torch.no_grad():
        torch.testing.assert_close(back(tokens(V)), hf(tokens(V)).logits, atol=1e-6, rtol=0)


def test_export_stage_command_line_replaces_the_folder_whole(nanogpt_run: tuple[Params, Path, Path]) -> None:
    _, data, out = nanogpt_run
    (out / "hf").mkdir(exist_ok=True)
    (out / "hf" / "stale.txt").write_text("from an earlier export")
    result = subprocess.run(
        [sys.executable, "-m", "stages.export", str(out.parent / "params.yaml")],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "DATA_ROOT": str(data), "OUT_DIR": str(out)},
    )
    assert result.returncode == 0, result.stderr
    written = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert {p.name for p in (out / "hf").iterdir()} == written
    assert [p.name for p in out.iterdir() if p.name.startswith(".hf.")] == []  # no temporary folder left
    assert f"wrote {out / 'hf'}" in result.stdout


@pytest.mark.slow
def test_an_export_killed_at_20_moments_leaves_a_whole_export_and_no_temporary(tmp_path: Path, corpus: Path) -> None:
    """Issue 30, the export kill family: an export SIGKILLed at a random moment over an earlier export, then the
    next run's clean-up: ``hf/`` is a whole export (the earlier or the new, which ``transformers`` loads) and no
    ``.hf.tmp-*`` or ``.hf.old-*`` copy is left."""
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus)))
    data, out = tmp_path / "data", tmp_path / "out"
    tokenize.run(params, data_root=data)
    train.run(params, data_root=data, out_dir=out)
    export.run(params, data_root=data, out_dir=out)
    whole = sorted(p.name for p in (out / "hf").iterdir())
    within = time_in_child(lambda: export.run(params, data_root=data, out_dir=out))
    rng, killed = random.Random(30), 0
    for _ in range(20):
        killed += killed_at_random(lambda: export.run(params, data_root=data, out_dir=out), within_s=within, rng=rng)
        remove_stale_temporaries(out)
        assert [p.name for p in out.iterdir() if p.name.startswith(".hf")] == []
        assert sorted(p.name for p in (out / "hf").iterdir()) == whole
    print(f"{killed} of 20 exports killed before they ended")
    transformers = pytest.importorskip("transformers")
    assert transformers.AutoModelForCausalLM.from_pretrained(out / "hf") is not None
