"""What users wrote before nanugpt/ became subpackages: checkpoints still load, old component paths are named.

``assets/checkpoints/before_subpackages/last.pt`` was trained by the code of c058859 (the flat ``nanugpt/``):
a 1-layer ``nanogpt`` (width 16, context 16) on a char corpus, 3 steps of ``adamw_nanogpt``, seed 7;
``expected.json`` holds that code's logits for token ids 0..15.
"""

from __future__ import annotations

import importlib
import json
import re

import pytest
import torch
from helpers import ASSETS, REPO, tiny_params

from nanugpt.checkpoint.store import load_checkpoint, load_trained_model
from nanugpt.config import registry
from nanugpt.config.params import ParamsError, validate_params

ASSET = ASSETS / "checkpoints" / "before_subpackages"


def test_a_checkpoint_written_before_the_move_loads_and_predicts_as_it_did() -> None:
    model, params, state = load_trained_model(ASSET / "last.pt", torch.device("cpu"))
    expected = json.loads((ASSET / "expected.json").read_text())
    with torch.no_grad():
        logits = model.eval()(torch.tensor(expected["idx"]))
    torch.testing.assert_close(logits[0, :4], torch.tensor(expected["logits_first_row"]), rtol=1e-5, atol=1e-6)
    assert (state["step"], params.model.module, params.optimizer.module) == (3, "nanogpt", "adamw_nanogpt")
    assert set(load_checkpoint(ASSET / "last.pt")) >= {"model", "optimizer", "params", "step"}


def test_a_component_named_by_its_old_path_gets_the_new_one() -> None:
    tree = tiny_params("corpus.txt")
    tree["data"]["module"] = "nanugpt.data:TokenizedDataOptions"
    tree["optimizer"]["module"] = "nanugpt.optimizers.AdamWOptions"
    with pytest.raises(ParamsError) as exc:
        validate_params(tree, "params.yaml")
    assert exc.value.problems == [
        "params.yaml: data.module: 'nanugpt.data:TokenizedDataOptions' is a path from before nanugpt's subpackages: "
        "write 'nanugpt.data.tokenized:TokenizedDataOptions' (or the short name 'tokenized')",
        "params.yaml: optimizer.module: 'nanugpt.optimizers.AdamWOptions' is a path from before nanugpt's "
        "subpackages: write 'nanugpt.optim.adamw:AdamWOptions' (or the short name 'adamw')",
    ]


def test_every_move_names_a_class_that_exists_and_the_docs_list_it() -> None:
    table = (REPO / "docs" / "architecture.md").read_text()
    for old, new in registry.MOVED_MODULES.items():
        assert f"`{old}`" in table or f"`{old.rpartition('.')[0]}`" in table, old  # nanugpt.tokenizers: one row
        targets = new.values() if isinstance(new, dict) else [new]
        for module in targets:
            importlib.import_module(module)
    for kind, names in registry.BUILTIN.items():
        for path in names.values():
            module, _, cls = path.partition(":")
            assert getattr(importlib.import_module(module), cls), (kind, path)


def test_registered_names_are_module_names() -> None:
    """A user who writes ``data.module: hf_dataset`` finds ``nanugpt/data/hf_dataset.py``; families that hold several
    variants (adamw_nanogpt in adamw, schedulers, losses, scalers) are named after the family."""
    families = {"optimizer": {"adamw_nanogpt": "adamw"}, "model": {"hf_gpt2": "hf_models", "hf_llama": "hf_models"}}
    for kind in ("data", "tokenizer", "model", "optimizer"):
        for name, path in registry.BUILTIN[kind].items():
            module = re.split(r"[.:]", path)[-2]
            assert module == families.get(kind, {}).get(name, name), (kind, name, path)
