"""``python -m pipeline.params import-nanugpt``: nanuGPT configs (our own fixtures in its format, under
tests/assets/nanugpt/) become explicit params files; every key is mapped, implied or refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ASSETS

from pipeline.params import main
from pipeline.schema import PipelineParams, load
from stages import tokenize, train

NANUGPT_CONFIGS = ASSETS / "nanugpt"


def run_import(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], Path]:
    """Import ``args`` into ``tmp_path/imported.yaml``; return the exit code, the refused lines and the file."""
    out = tmp_path / "imported.yaml"
    code = main(["import-nanugpt", *args, "-o", str(out)])
    refused = [line for line in capsys.readouterr().err.splitlines() if line.startswith("not mapped: ")]
    return code, refused, out


def loaded(path: Path, monkeypatch: pytest.MonkeyPatch) -> PipelineParams:
    monkeypatch.setenv("DATA_ROOT", "/data")  # nanuGPT's paths are written with $DATA_ROOT
    return load(path)


def test_gpt2_tinyshakespeare_maps_every_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, refused, out = run_import(
        tmp_path,
        capsys,
        str(NANUGPT_CONFIGS / "train_gpt2" / "tinyshakespeare.yaml"),
        "--tokenize",
        str(NANUGPT_CONFIGS / "tokenize" / "tinyshakespeare_byte.yaml"),
    )
    assert (code, refused) == (0, [])
    params = loaded(out, monkeypatch)
    model = params.model
    assert (model.module, model.n_layer, model.n_embd, model.context_length) == ("nanogpt", 3, 96, 64)
    assert (model.attn_dropout, model.resid_dropout, model.mlp_dropout, model.embed_dropout) == (0.15, 0.1, 0.1, 0.05)
    assert model.bias is False and model.tie_lm_head is False  # nanuGPT's get_model has no biases by default
    assert (params.optimizer.module, params.optimizer.lr, params.optimizer.beta2) == ("adamw_nanogpt", 1.5e-3, 0.99)
    assert (params.scheduler.module, params.scheduler.warmup_steps, params.scheduler.min_lr_ratio) == (
        "linear",
        20,
        0.01,
    )
    assert (params.training.max_steps, params.training.device_batch_size, params.training.global_batch_size) == (
        300,
        8,
        16,
    )
    assert (params.data.dataset, params.data.source, params.data.val_fraction) == (
        "tinyshakespeare",
        "/data/datasets/tinyshakespeare/input.txt",
        0.05,
    )
    assert params.tokenizer.special_tokens == ["<EOS>", "<PAD>", "<UNK>", "<BOS>"]
    assert (params.general.seed, params.general.project_name, params.logging.wandb) == (
        11,
        "gpt2_tinyshakespeare",
        False,
    )
    assert (params.eval.eval_every, params.eval.eval_iters, params.generate.checkpoint) == (100, 50, "best")
    assert params.general.data_seed == 3  # nanuGPT's data_loader_seed


def test_the_imported_file_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "train_gpt2" / "tinyshakespeare.yaml"))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    shrunk = ["--data.source", str(corpus), "--data.sha256", "null", "--training.max_steps", "3"]
    shrunk += [
        "--model.n_layer",
        "1",
        "--eval.eval_iters",
        "1",
        "--eval.eval_every",
        "0",
        "--scheduler.warmup_steps",
        "1",
    ]
    params = load(tmp_path / "imported.yaml", shrunk)
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "checkpoints" / "last.pt").is_file() and summary is not None


def test_unmappable_keys_are_listed_with_reasons_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, refused, out = run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "train_gpt2" / "openwebtext_wsd.yaml"))
    assert code == 1
    assert refused == [
        "not mapped: general.distributed_backend: 'horovod': only torchrun's NCCL (GPU) and gloo (CPU) are supported",
        "not mapped: optimizer.module_kwargs.zero_stage: 1: no ZeRO-1 optimizer-state sharding here",
        "not mapped: eval.future_knob: 3: no counterpart here",
    ]
    assert out.read_text().startswith("# not mapped: general.distributed_backend")  # the rest is still written
    params = loaded(out, monkeypatch)
    assert (params.scheduler.module, params.scheduler.cooldown_steps, params.scheduler.min_lr_ratio) == (
        "constant",
        1000,  # cooldown_frac 0.25 of 4000 steps
        1e-3,
    )
    assert (params.scaler.module, params.scaler.target_norm, params.training.grad_clip) == ("keller", 1.0, 0.0)
    assert params.training.checkpoint_every_min == 120  # checkpoint_every_hr: 2
    assert params.data.source == "hf:Skylion007/openwebtext"  # nanuGPT's openwebtext, from the table


def test_llama2_takes_nanugpts_tinyllama_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, refused, out = run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "train_llama2" / "base_config.yaml"))
    assert (code, refused) == (0, [])
    params = loaded(out, monkeypatch)
    assert (params.model.module, params.model.n_kv_head, params.model.intermediate_size) == ("tinyllama", 1, 2048)
    assert (params.tokenizer.module, params.tokenizer.name_or_path) == ("hf", "NousResearch/Llama-2-7b-hf")
    assert (params.data.dataset, params.data.source) == ("tinystories_v2", "hf:roneneldan/TinyStories")


def test_gpt_neox_options_on_tinyllama_are_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, refused, _ = run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "train_llama2" / "neox.yaml"))
    assert code == 1
    assert [line.split(":")[1].strip() for line in refused] == [
        "model.module_kwargs.rotary_percentage",
        "model.module_kwargs.parallel_residual",
        "model.module_kwargs._mlp_class",
    ]


def test_grokking_maps_and_large_primes_draw_a_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, refused, out = run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "grokking" / "base_config.yaml"))
    assert (code, refused) == (0, [])
    params = loaded(out, monkeypatch)
    assert (params.data.module, params.data.prime, params.data.train_fraction, params.tokenizer.prime) == (
        "grokking",
        31,
        0.4,
        31,
    )
    assert (params.model.module, params.model.bias, params.loss.module) == ("tiny_transformer", True, "grokking")
    assert (params.optimizer.weight_decay, params.scheduler.min_lr_ratio) == (1.0, 1.0)

    code, refused, out = run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "grokking" / "prime50k.yaml"))
    assert code == 1 and len(refused) == 1  # nanuGPT's whole table is not ours; its whole-split evaluation is
    assert refused[0] == (
        "not mapped: data.module_kwargs.prime: 50021: nanuGPT splits every pair (a, b), about 2.5e+09; above "
        "p = 10,007 we draw data.sampled_examples of them, set to 4,000,000 as in params/grokking_prime50k.yaml"
    )
    assert out.read_text().startswith("# not mapped: data.module_kwargs.prime")  # written: the rest is valid
    large = loaded(out, monkeypatch)
    assert (large.data.prime, large.data.sampled_examples, large.tokenizer.prime) == (50021, 4_000_000, 50021)
    assert large.eval.eval_iters is None  # the whole val split, as nanuGPT's eval_iters: null
    assert large.general.data_seed == 1  # data_loader_seed: the train batches' order apart from general.seed


def test_tokenize_configs_go_with_a_train_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenize_config = str(NANUGPT_CONFIGS / "tokenize" / "tinyshakespeare_byte.yaml")
    code, refused, out = run_import(tmp_path, capsys, tokenize_config)
    assert code == 1 and "a tokenize config: pass it with --tokenize beside the train config" in refused[0]
    assert not out.exists()
    train_config = str(NANUGPT_CONFIGS / "train_gpt2" / "tinyshakespeare.yaml")
    paragraphs = str(NANUGPT_CONFIGS / "tokenize" / "tinyshakespeare_paragraphs.yaml")
    code, refused, _ = run_import(tmp_path, capsys, train_config, "--tokenize", paragraphs)
    assert code == 1 and len(refused) == 1 and "data.hf_sample_by: 'paragraph': the text is read as one" in refused[0]
    llama = str(NANUGPT_CONFIGS / "train_llama2" / "base_config.yaml")
    code, refused, _ = run_import(tmp_path, capsys, llama, "--tokenize", tokenize_config)
    assert code == 1 and any("data.tokenized_out_dir" in line for line in refused)  # another dataset
    assert any("tokenizer" in line and "another tokenizer" in line for line in refused)


def test_multi_length_arithmetic_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, refused, out = run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "arithmatic" / "base_config.yaml"))
    assert (code, refused) == (0, [])
    data = loaded(out, monkeypatch).data
    assert (data.module, data.min_digits, data.digits, data.train_problems) == ("arithmetic", 2, 4, 3 * 5000)


def test_without_o_the_file_goes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-nanugpt", str(NANUGPT_CONFIGS / "grokking" / "base_config.yaml")]) == 0
    assert "module: grokking" in capsys.readouterr().out


def test_muon_takes_nanugpts_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, refused, out = run_import(tmp_path, capsys, str(NANUGPT_CONFIGS / "train_gpt2" / "muon.yaml"))
    assert (code, refused) == (0, [])
    opt = loaded(out, monkeypatch).optimizer
    assert (opt.module, opt.lr, opt.adamw_lr, opt.embed_lr, opt.momentum_start) == ("muon", 0.04, 0.01, 0.6, 0.85)
    assert tuple(opt.adamw_betas) == (0.8, 0.95)


@pytest.mark.parametrize(("hours", "every_min", "every_steps"), [(0.5, 30, 0), (0, 0, 1), (None, 0, 0)])
def test_checkpoint_every_hr_becomes_minutes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *,
    hours: float | None,
    every_min: float,
    every_steps: int,
) -> None:
    config = tmp_path / "timed.yaml"
    include = NANUGPT_CONFIGS / "train_gpt2" / "tinyshakespeare.yaml"
    config.write_text(
        f"__include__: ['{include}']\neval:\n  checkpoint_every_hr: {'null' if hours is None else hours}\n"
    )
    tokenize_config = str(NANUGPT_CONFIGS / "tokenize" / "tinyshakespeare_byte.yaml")
    code, refused, out = run_import(tmp_path, capsys, str(config), "--tokenize", tokenize_config)
    assert (code, refused) == (0, [])
    training = loaded(out, monkeypatch).training
    # nanuGPT saves once more than the hours have passed since the last save, so 0 means every step
    assert (training.checkpoint_every_min, training.checkpoint_every) == (every_min, every_steps)


def test_a_datasets_own_val_and_test_splits_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    train_config = str(NANUGPT_CONFIGS / "train_gpt2" / "wikitext103.yaml")
    tokenize_config = str(NANUGPT_CONFIGS / "tokenize" / "wikitext103.yaml")
    code, refused, out = run_import(tmp_path, capsys, train_config, "--tokenize", tokenize_config)
    assert (code, refused) == (0, [])
    data = loaded(out, monkeypatch).data
    assert (data.source, data.hf.config, data.hf.val_split, data.hf.test_split) == (
        "hf:Salesforce/wikitext",
        "wikitext-103-raw-v1",
        "validation",
        "test",
    )
    code, refused, _ = run_import(tmp_path, capsys, train_config)  # the known source: the hub's test split too
    assert (code, refused) == (0, [])
    shakespeare = str(NANUGPT_CONFIGS / "train_gpt2" / "tinyshakespeare_test_path.yaml")
    code, refused, _ = run_import(tmp_path, capsys, shakespeare)
    assert code == 1 and "a text corpus has no test split of its own: set data.test_fraction" in refused[0]
