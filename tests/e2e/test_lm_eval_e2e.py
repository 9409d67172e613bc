"""lm-evaluation-harness on our Hugging Face export, offline: the harness's per-example log-likelihoods of a tiny
local task are the ones our own scorer (``nanugpt.eval.hellaswag``) computes for the same strings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, tiny_params, write_params

from nanugpt.checkpoint.store import load_trained_model
from nanugpt.config.token_meta import read_meta
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.eval.hellaswag import ending_row, row_losses
from pipeline.schema import load
from stages import export, tokenize, train

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

CONTEXT_LENGTH = 32
# HellaSwag-shaped pairs in the tiny corpus's characters: a context, then " " + an ending
PAIRS = [
    ("First Citizen:\nBefore we proceed", " any further"),
    ("All:\nSpeak,", " speak."),
    ("You are all resolved rather to", " die than to famish?"),
    ("Resolved.", " hear me speak."),
    # longer than the model's context (in both tokenizers): the oldest tokens go, as the harness drops them
    (
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\n"
        "You are all resolved rather to die than to famish?\n\nAll:\nResolved.",
        " resolved.",
    ),
]
TASK_YAML = """\
task: nanugpt_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
"""
# The char tokenizer has no end-of-text token, which the harness encodes with unless it is given another id.
MODEL_ARGS = {"tiktoken": "", "char": ",prefix_token_id=0"}


def exported_run(folder: Path, corpus: Path, tokenizer: str) -> tuple[Path, Path]:
    """Tokenize, train a tiny model 4 steps and export it; return (the token files' folder, the export)."""
    tree = tiny_params(
        corpus,
        tokenizer={"module": tokenizer},
        training={"max_steps": 4, "checkpoint_every": 0, "peak_flops": 1e12},
        eval={"eval_every": 0},
        model={"context_length": CONTEXT_LENGTH},
    )
    params = load(write_params(folder / "params.yaml", tree))
    tokenize.run(params, data_root=folder / "data")
    train.run(params, data_root=folder / "data", out_dir=folder / "out")
    return folder / "data" / "tiny" / tokenizer, export.run(params, data_root=folder / "data", out_dir=folder / "out")


def harness_loglikelihoods(folder: Path, hf_folder: Path, model_args: str) -> list[float]:
    """The per-example log-likelihoods of ``lm_eval --log_samples`` on PAIRS, run offline."""
    tasks = folder / "tasks"
    tasks.mkdir()
    data = tasks / "pairs.jsonl"
    data.write_text("".join(json.dumps({"context": c, "continuation": x}) + "\n" for c, x in PAIRS))
    (tasks / "nanugpt_tiny.yaml").write_text(TASK_YAML.format(data=data))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(folder / "hf-home"),  # no cache of this machine's user
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "lm_eval", "--model", "hf"]
    command += ["--model_args", f"pretrained={hf_folder},dtype=float32{model_args}", "--tasks", "nanugpt_tiny"]
    command += ["--include_path", str(tasks), "--device", "cpu", "--batch_size", "1"]
    command += ["--log_samples", "--output_path", str(folder / "results")]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (samples,) = (folder / "results").rglob("samples_nanugpt_tiny_*.jsonl")
    records = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    assert [(r["doc"]["context"], r["doc"]["continuation"]) for r in records] == PAIRS
    return [float(r["resps"][0][0][0]) for r in records]


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["tiktoken", "char"])
def test_the_harness_gives_our_loglikelihoods(tmp_path: Path, corpus: Path, tokenizer: str) -> None:
    data_dir, hf_folder = exported_run(tmp_path, corpus, tokenizer)
    theirs = harness_loglikelihoods(tmp_path, hf_folder, MODEL_ARGS[tokenizer])

    model, _, _ = load_trained_model(tmp_path / "out" / "checkpoints" / "last.pt", torch.device("cpu"))
    encode = tokenizer_from_meta(read_meta(data_dir)).encode
    rows = [ending_row(encode(context), encode(continuation), CONTEXT_LENGTH) for context, continuation in PAIRS]
    sums, _ = row_losses(model, rows, torch.device("cpu"), "float32")
    ours = (-sums).tolist()
    # float32 both, different attention kernels and padding (ours: one padded batch; theirs: one row a forward)
    print(
        "log-likelihoods", ours, "largest relative difference", max(abs(a - b) / abs(b) for a, b in zip(theirs, ours))
    )
    assert theirs == pytest.approx(ours, rel=1e-5)
