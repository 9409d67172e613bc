"""``generate.checkpoint`` and ``export.checkpoint``: ``last`` (default), ``best``, or a path (nanuGPT's
``checkpoint_name``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_params, write_params

from nanugpt.checkpoint.store import CheckpointError
from nanugpt.config.params import load_params
from nanugpt.config.schema import Params
from pipeline import paths
from stages import export, generate, tokenize, train


@pytest.fixture
def trained(tmp_path: Path, corpus: Path) -> tuple[Params, Path, Path]:
    """A tiny run of 20 steps with step checkpoints at 10 and 20 and a best.pt."""
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus)))
    data, out = tmp_path / "data", tmp_path / "out"
    tokenize.run(params, data_root=data)
    train.run(params, data_root=data, out_dir=out)
    return params, data, out


def with_choice(params: Params, section: str, choice: str) -> Params:
    """``params`` with ``<section>.checkpoint`` set to ``choice``."""
    return params.model_copy(update={section: getattr(params, section).model_copy(update={"checkpoint": choice})})


def test_last_and_best_name_the_files_of_the_checkpoint_folder(tmp_path: Path) -> None:
    assert paths.chosen_checkpoint("last", tmp_path) == tmp_path / "checkpoints" / "last.pt"
    assert paths.chosen_checkpoint("best", tmp_path) == tmp_path / "checkpoints" / "best.pt"
    assert paths.chosen_checkpoint("runs/a/step-0000010.pt", tmp_path) == Path("runs/a/step-0000010.pt")


def test_the_default_is_last_for_both_stages(params_file: Path) -> None:
    params = load_params(params_file)
    assert params.generate.checkpoint == "last" and params.export.checkpoint == "last"


def test_generate_samples_from_the_checkpoint_it_names(trained: tuple[Params, Path, Path]) -> None:
    params, data, out = trained
    step_10 = out / "checkpoints" / "step-0000010.pt"
    by_default = generate.run(params, data_root=data, out_dir=out)
    assert generate.run(with_choice(params, "generate", "last"), data_root=data, out_dir=out) == by_default
    early = generate.run(with_choice(params, "generate", str(step_10)), data_root=data, out_dir=out)
    assert early != by_default  # ten steps less training: other weights, other text
    best_step = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["step"]
    best = generate.run(with_choice(params, "generate", "best"), data_root=data, out_dir=out)
    assert best == (by_default if best_step == 20 else early)


def test_a_missing_checkpoint_is_named(trained: tuple[Params, Path, Path], tmp_path: Path) -> None:
    params, data, out = trained
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such checkpoint"):
        generate.run(with_choice(params, "generate", str(tmp_path / "nope.pt")), data_root=data, out_dir=out)


def test_export_writes_the_checkpoint_it_names(trained: tuple[Params, Path, Path]) -> None:
    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    params, data, out = trained
    step_10 = out / "checkpoints" / "step-0000010.pt"
    folder = export.run(with_choice(params, "export", str(step_10)), data_root=data, out_dir=out)
    exported = load_file(folder / "model.safetensors")
    state = torch.load(step_10, weights_only=True)["model"]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    name = "transformer.wte.weight"
    assert torch.equal(exported[name], state[name]) and not torch.equal(exported[name], last[name])
