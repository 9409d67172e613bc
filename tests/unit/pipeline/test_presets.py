"""Every preset in params/ validates, and trains 3 steps on CPU when shrunk through command-line overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from nanugpt.config.loader import load_yaml_tree
from nanugpt.data.tokenizers.byte import ByteTokenizer
from nanugpt.inference.hf_export import write_tokenizer
from pipeline.schema import load
from stages import tokenize, train

PRESETS = sorted(p for p in (REPO / "params").glob("*.yaml"))
SMALL_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "context_length": 16}


def offline_hf_tokenizer(folder: Path) -> Path:
    """A local folder of Hugging Face tokenizer files (our byte tokenizer's), for presets whose ``hf`` tokenizer
    is a hub download: the suite runs offline."""
    folder.mkdir(exist_ok=True)
    write_tokenizer(ByteTokenizer(["<|endoftext|>"]), folder, 1024)
    return folder


def shrink(tree: dict, corpus: Path) -> list[str]:
    """Overrides that keep a preset's components but make it a few-second CPU run (the corpus's folder holds the
    files it needs: a local hf tokenizer)."""
    overrides = {
        "general.device_type": "cpu",
        "general.dtype": "float32",
        "general.torch_compile": "false",
        "training.max_steps": "3",
        "training.device_batch_size": "2",
        "training.global_batch_size": "4",
        "training.checkpoint_every": "0",
        "eval.eval_every": "0",
        "eval.eval_iters": "1",
        "launch.nproc_per_node": "1",
        "launch.nnodes": "1",
        "launch.gpus_per_node": "0",
    }
    if tree["data"]["module"] == "tokenized":  # real corpora are downloads: train on the tiny one instead
        overrides |= {
            "data.source": str(corpus),
            "data.sha256": "null",
            "data.dataset": "tiny",
            "data.val_fraction": "0.1",
        }
    if tree["tokenizer"]["module"] == "hf":  # a download: the same component, loading files written here
        overrides["tokenizer.name_or_path"] = str(offline_hf_tokenizer(corpus.parent / "hf_tokenizer"))
    if tree["data"].get("sampled_examples"):  # a large grokking prime: the same prime, fewer pairs
        overrides["data.sampled_examples"] = "2000"
    if tree["model"]["module"] != "tiny_transformer":
        overrides |= {f"model.{key}": str(value) for key, value in SMALL_MODEL.items()}
    if "n_kv_head" in tree["model"]:
        overrides |= {"model.n_kv_head": "1", "model.intermediate_size": "64"}
    for key in ("warmup_steps", "cooldown_steps"):
        if tree["scheduler"].get(key):
            overrides[f"scheduler.{key}"] = "1"
    if "momentum_warmup_steps" in tree["optimizer"]:
        overrides["optimizer.momentum_warmup_steps"] = "1"
    return [item for key, value in overrides.items() for item in (f"--{key}", value)]


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates_and_trains_three_steps(preset: Path, tmp_path: Path, corpus: Path) -> None:
    full = load(preset)  # the preset as written
    if full.data.module == "mixture" and not os.environ.get("NANUGPT_TINYSHAKESPEARE"):
        pytest.skip("the mixture preset's Tiny Shakespeare is a download: NANUGPT_TINYSHAKESPEARE names a copy")
    assert full.training.max_steps > 0
    tree = load_yaml_tree(preset)
    params = load(preset, shrink(tree, corpus))
    assert params.model.module == full.model.module and params.optimizer.module == full.optimizer.module
    assert params.tokenizer.module == full.tokenizer.module
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert summary["step"] == 3 and summary["train_loss"] == summary["train_loss"]  # finite, not NaN


def test_presets_cover_the_issue_list() -> None:
    names = {p.stem for p in PRESETS}
    assert {
        "tinyshakespeare_char",
        "tinyshakespeare_byte",
        "tinyshakespeare_gpt2",
        "openwebtext_gpt2_124m",
        "fineweb_gpt2_124m",
        "fineweb_gpt2_124m_muon",
        "tinystories_llama",
        "grokking_prime97",
        "arithmetic",
        # nanuGPT's experiment families (issue 21)
        "tinyshakespeare_byte_nanugpt",
        "grokking_prime223",
        "openwebtext_gpt2_124m_keller_adamw",
        "openwebtext_gpt2_124m_wsd",
        "wikitext103_gpt2",
        "wikitext103_llama2",
        "openwebtext_tinyllama_345m",
        "grokking_prime50k",
        "tinyshakespeare_speedrun",  # issue 22's time to 1.88
        "mixture_shakespeare_arithmetic",  # issue 33's mixture on data made offline
        "openwebtext_gpt2_124m_packed",  # and its packed-documents variants
        "fineweb_gpt2_124m_packed",
    } <= names
    assert yaml.safe_load((REPO / "params" / "openwebtext_gpt2_124m.yaml").read_text())["__include__"]


LR_RANGE_TEST = REPO / "params" / "overlays" / "lr_range_test.yaml"


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_the_lr_range_test_overlay_stacks_onto_every_preset(preset: Path) -> None:
    params = load(f"{preset};{LR_RANGE_TEST}")
    assert (params.scheduler.module, params.training.max_steps) == ("lr_range_test", 100)
    assert params.model == load(preset).model  # the overlay changes the schedule, not the experiment


def test_a_preset_with_the_overlay_trains(tmp_path: Path, corpus: Path) -> None:
    stacked = f"{REPO / 'params' / 'tinyshakespeare_char.yaml'};{LR_RANGE_TEST}"
    params = load(stacked, shrink(load_yaml_tree(stacked), corpus))
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert summary["step"] == 3 and "suggested_lr" in str(summary)


def test_the_mixture_example_in_docs_is_the_presets_data_section() -> None:
    text = (REPO / "docs" / "data.md").read_text().split("## Mixtures", 1)[1]
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    preset = load_yaml_tree(REPO / "params" / "mixture_shakespeare_arithmetic.yaml")
    assert example["data"] == {key: value for key, value in preset["data"].items() if key != "_inherit"}
