"""FSDP2 and activation checkpointing under the real torchrun (gloo on CPU): the same losses as DDP and as one
process, for the catalog's block models and optimizers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import SETUPS, TINY, launch, one_process, run_params, tiny_params, write_params

from nanugpt.config.params import ParamsError, validate_params
from nanugpt.distributed.fsdp import blocks_of, checkpoint_blocks, mixed_precision
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import TrainingError
from nanugpt.train.build import build_run
from pipeline.schema import load
from stages import tokenize


@pytest.mark.slow
@pytest.mark.parametrize("setup", SETUPS)
def test_fsdp_ddp_and_one_process_agree_with_and_without_activation_checkpointing(
    tmp_path: Path, corpus: Path, setup: str
) -> None:
    runs = {"one": one_process(tmp_path, run_params(corpus, setup), "one")}
    runs["one+ac"] = one_process(tmp_path, run_params(corpus, setup, activation_checkpointing="full"), "one-ac")
    runs["ddp"] = launch(tmp_path, run_params(corpus, setup, strategy="ddp"), "ddp", 2)
    # logged at every step, evaluated and saved mid-run (issue 30, case 1: the weight norm crashed where an
    # evaluation left the root's parameters gathered; tests/unit/metrics/test_train_metrics.py makes that state)
    fsdp = run_params(corpus, setup, strategy="fsdp", log_every=1, checkpoint_every=4)
    runs["fsdp"] = launch(tmp_path, {**fsdp, "eval": {**fsdp["eval"], "eval_every": 4}}, "fsdp", 2)
    assert [
        row["step"] for row in csv.DictReader((tmp_path / "fsdp" / "plots" / "val.csv").read_text().splitlines())
    ] == ["4", "8"]
    fsdp_ac = run_params(corpus, setup, strategy="fsdp", activation_checkpointing="full")
    runs["fsdp+ac"] = launch(tmp_path, fsdp_ac, "fsdp-ac", 2)
    one = runs["one"]
    assert all(len(curve) == 8 for curve in runs.values()) and one[-1] < one[0]  # 8 steps each, and it trains
    assert runs["one+ac"] == pytest.approx(one, rel=1e-6)  # the same operations, run again in backward
    # the same global batches: only summation order differs (micro-batch split, all-reduce vs reduce-scatter)
    for name in ("ddp", "fsdp", "fsdp+ac"):
        assert runs[name] == pytest.approx(one, rel=1e-4), name
    assert runs["fsdp"] == pytest.approx(runs["ddp"], rel=1e-4)


@pytest.mark.slow
def test_ddp_with_activation_checkpointing_matches_one_process(tmp_path: Path, corpus: Path) -> None:
    """DDP's gradient hooks fire in the recomputed backward too (one model family: the wrapping is the same)."""
    one = one_process(tmp_path, run_params(corpus, "nanogpt"), "one")
    ddp_ac = launch(tmp_path, run_params(corpus, "nanogpt", strategy="ddp", activation_checkpointing="full"), "ddp", 2)
    assert ddp_ac == pytest.approx(one, rel=1e-4)


@pytest.mark.slow
def test_fsdp_with_each_block_compiled_matches_one_eager_process(tmp_path: Path, corpus: Path) -> None:
    """``general.torch_compile`` under fsdp compiles each block before sharding (FSDP's hooks stay outside the
    compiled graphs); compiled kernels agree with eager ones to rounding."""
    one = one_process(tmp_path, run_params(corpus, "nanogpt"), "one")
    params = run_params(corpus, "nanogpt", strategy="fsdp")
    compiled = launch(tmp_path, {**params, "general": {**params["general"], "torch_compile": True}}, "compiled", 2)
    assert compiled == pytest.approx(one, rel=1e-4)


def test_fsdp_casts_in_place_of_autocast_only_on_cuda_with_bfloat16() -> None:
    policy = mixed_precision("cuda", "bfloat16")
    assert policy is not None and (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    for device_type, dtype in (("cuda", "float32"), ("cpu", "bfloat16"), ("cpu", "float32")):
        assert mixed_precision(device_type, dtype) is None  # autocast (or nothing) as under ddp


def test_activation_checkpointing_recomputes_each_block() -> None:
    params = validate_params(tiny_params("unused.txt", model={"module": "nanogpt", **TINY}), "test")
    model = params.model.build(65)
    calls: list[int] = []
    for i, block in enumerate(model.transformer_blocks()):
        block.register_forward_pre_hook(lambda *_, i=i: calls.append(i))
    names = [name for name, _ in model.named_parameters()]
    checkpoint_blocks(model)
    assert [name for name, _ in model.named_parameters()] == names  # checkpoints keep their keys
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    assert calls == [0, 1, 1, 0]  # forward, then each block again in backward (last first)


@pytest.mark.parametrize(
    "module", ["nanogpt", "nanogpt_modern", "tinyllama", "tiny_transformer", "hf_gpt2", "hf_llama"]
)
def test_every_catalog_block_model_names_its_blocks(module: str) -> None:
    if module.startswith("hf_"):
        pytest.importorskip("transformers")
    params = validate_params(tiny_params("unused.txt", model={"module": module, **TINY}), "test")
    model = params.model.build(65)
    blocks = blocks_of(model, "test")
    assert len(blocks) == 2
    assert all(isinstance(b, torch.nn.Module) for b in blocks)


def test_a_model_without_blocks_is_refused_by_name() -> None:
    with pytest.raises(TrainingError, match=r"training.strategy fsdp needs the model's transformer blocks.*Linear"):
        blocks_of(torch.nn.Linear(2, 2), "training.strategy fsdp")


def test_strategy_is_validated_at_load_time() -> None:
    with pytest.raises(ParamsError, match=r"training.strategy: input should be 'ddp' or 'fsdp'"):
        validate_params(tiny_params("unused.txt", training={"strategy": "zero"}), "test")
    with pytest.raises(ParamsError, match=r"training.strategy: fsdp does not combine with general.dtype float16"):
        validate_params(tiny_params("unused.txt", training={"strategy": "fsdp"}, general={"dtype": "float16"}), "test")
    with pytest.raises(ParamsError, match=r"training.activation_checkpointing: input should be 'none' or 'full'"):
        validate_params(tiny_params("unused.txt", training={"activation_checkpointing": "some"}), "test")


def test_one_process_ignores_the_sharding(tmp_path: Path, corpus: Path) -> None:
    params = load(write_params(tmp_path / "p.yaml", run_params(corpus, "nanogpt", strategy="fsdp")))
    tokenize.run(params, data_root=tmp_path / "data")
    data_dir = tmp_path / "data" / "tiny" / "char"
    parts = build_run(params, data_dir, DistInfo(0, 0, 1, torch.device("cpu")), print)
    assert all(type(p) is torch.nn.Parameter for p in parts.model.parameters())


@pytest.mark.slow
def test_fsdp_holds_a_world_size_share_of_parameters_and_optimizer_state(tmp_path: Path) -> None:
    from bench import fsdp_memory

    results = fsdp_memory.main(
        ["--world-sizes", "4", "--n-layer", "2", "--n-embd", "32", "--steps", "1", "--json", str(tmp_path / "m.json")]
    )
    for row in results["runs"]:
        n = row["world_size"]
        for rank in row["ranks"]["fsdp"]:
            fsdp = rank["params_bytes"] + rank["optimizer_bytes"]
            ddp = row["ranks"]["ddp"][0]["params_bytes"] + row["ranks"]["ddp"][0]["optimizer_bytes"]
            assert fsdp <= ddp * (1 / n + 0.10), (n, fsdp, ddp)
            assert rank["grads_bytes"] <= row["ranks"]["ddp"][0]["grads_bytes"] * (1 / n + 0.10)
