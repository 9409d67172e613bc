"""``hf_dataset``: each rank streams its own documents through a seeded shuffle buffer; resume reads nothing again;
validation comes from a split or from held-out documents and is read once."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import killed_after, launch_train, tiny_params, write_params

from nanugpt.checkpoint.sharded import read_run_state
from nanugpt.checkpoint.store import load_checkpoint, resolve
from nanugpt.config.params import ParamsError, validate_params
from nanugpt.config.schema import BatchShare, Params
from nanugpt.config.token_meta import read_meta
from nanugpt.data.hf_dataset import DocumentStream
from nanugpt.data.sources import files_digest
from nanugpt.errors import UserError
from pipeline.schema import load
from stages import evaluate, tokenize, train

pytest.importorskip("datasets")

N_FILES, DOCS_PER_FILE = 4, 10  # 4 shards: 2 ranks get 2 whole files each


def documents() -> list[str]:
    """40 distinct documents of 9 to 47 characters."""
    return [f"doc {i:02d} " + "abcdefghij"[i % 10] * (i % 39) for i in range(N_FILES * DOCS_PER_FILE)]


def write_corpus(folder: Path) -> list[str]:
    """The documents as JSON lines in ``N_FILES`` files of ``folder`` (one shard each)."""
    docs = documents()
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(N_FILES):
        lines = (json.dumps({"text": doc}) for doc in docs[f * DOCS_PER_FILE : (f + 1) * DOCS_PER_FILE])
        (folder / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    return docs


def stream_tree(tmp_path: Path, data: dict[str, Any] | None = None, **training: Any) -> dict[str, Any]:
    """Params of a tiny byte-level model on the JSON corpus, no validation split: held-out documents instead."""
    write_corpus(tmp_path / "corpus")
    tree = tiny_params(
        "unused",
        training={"device_batch_size": 2, "global_batch_size": 4, **training},
        tokenizer={"module": "byte"},
        eval={"eval_every": 4, "eval_iters": 2},
    )
    files = [str(tmp_path / "corpus" / f"part-{f}.jsonl") for f in range(N_FILES)]
    tree["data"] = {
        "module": "hf_dataset",
        "dataset": "tiny_stream",
        "name": "json",
        "data_files": {"train": files},
        "val_split": None,
        "val_documents": 8,
        "shuffle_buffer": 8,
        **(data or {}),
    }
    return tree


def prepared(tmp_path: Path, data: dict[str, Any] | None = None, **training: Any) -> tuple[Params, Path]:
    params = validate_params(stream_tree(tmp_path, data, **training), "test")
    tokenize.run(params, data_root=tmp_path / "data")
    return params, tmp_path / "data" / "tiny_stream" / "byte"


def stream_of(params: Params, data_dir: Path, rank: int = 0, world_size: int = 1, seed: int = 0) -> DocumentStream:
    share = BatchShare(2, 2 * world_size, rank, world_size)
    return params.data.batches(
        data_dir, read_meta(data_dir), "train", context_length=16, share=share, seed=seed
    ).documents


def epochs(stream: DocumentStream, count: int) -> list[list[str]]:
    """The documents of the stream's first ``count`` epochs, each in the order drawn."""
    return epochs_and_reads(stream, count)[0]


def epochs_and_reads(stream: DocumentStream, count: int) -> tuple[list[list[str]], list[int]]:
    """The documents of the stream's first ``count`` epochs, and the documents read by each epoch's last draw."""
    drawn: list[list[str]] = [[] for _ in range(count + 1)]
    reads = [0] * (count + 1)
    while stream.epoch < count:
        document = next(stream)
        drawn[stream.epoch].append(document)
        reads[stream.epoch] = stream.read_here
    return drawn[:count], reads[:count]


def test_each_rank_reads_only_its_own_documents(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path)
    held_out, trained = documents()[:8], documents()[8:]
    per_rank = []
    for rank in range(2):
        (first,), (reads,) = epochs_and_reads(stream_of(params, data_dir, rank, 2), 1)
        per_rank.append(first)
        assert reads == 2 * DOCS_PER_FILE  # its two files, not the other rank's
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(trained)  # every training document once, none held out
    assert not set(held_out) & set(per_rank[0] + per_rank[1])


def test_shuffle_order_changes_per_epoch_and_is_reproducible(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path, {"shuffle_buffer": 100})
    first, second = epochs(stream_of(params, data_dir, seed=3), 2)
    assert sorted(first) == sorted(second) == sorted(documents()[8:]) and first != second
    assert epochs(stream_of(params, data_dir, seed=3), 2) == [first, second]  # the same seed: the same order
    assert epochs(stream_of(params, data_dir, seed=4), 1)[0] != first
    in_order = validate_params(stream_tree(tmp_path, {"shuffle_buffer": 1}), "test")
    assert epochs(stream_of(in_order, data_dir), 1)[0] == documents()[8:]


def test_stream_state_resumes_the_next_documents(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path)
    stream = stream_of(params, data_dir)
    for _ in range(50):  # into the second epoch
        next(stream)
    state = stream.state_dict()
    expected = [next(stream) for _ in range(30)]
    resumed = stream_of(params, data_dir)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(30)] == expected
    assert resumed.read_here == stream.position - state["position"]  # no document before the state read again


def train_losses(out_dir: Path) -> list[float]:
    with open(out_dir / "plots" / "train.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


def stream_states(out_dir: Path, name: str) -> list[dict[str, Any]]:
    """Each rank's document stream state in checkpoint ``name`` (a ``.pt`` file or a sharded step folder)."""
    path = resolve(out_dir / "checkpoints" / name)
    state = read_run_state(path) if path.is_dir() else load_checkpoint(path)
    return [rank["documents"] for rank in state["data"]["stream_by_rank"]]


def test_resume_reads_no_document_again_and_gives_the_same_losses(tmp_path: Path) -> None:
    params, _ = prepared(tmp_path, max_steps=24, checkpoint_every=8)
    data = tmp_path / "data"
    train.run(params, data_root=data, out_dir=tmp_path / "full")
    resumed = killed_after(tmp_path / "full", 8, tmp_path / "resumed")
    train.run(params, data_root=data, out_dir=resumed)
    assert train_losses(resumed) == train_losses(tmp_path / "full")  # bitwise, float32 on CPU

    (at_8,) = stream_states(tmp_path / "full", "step-0000008.pt")
    (full,) = stream_states(tmp_path / "full", "last.pt")
    (end,) = stream_states(resumed, "last.pt")
    assert full["epoch"] >= 1 and full["position"] == end["position"] > at_8["position"] > 0
    assert full["read_here"] == full["position"]
    assert end["read_here"] == end["position"] - at_8["position"]  # the resumed run read on from step 8 only


def test_validation_reads_its_documents_once(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path)
    val = params.data.batches(data_dir, read_meta(data_dir), "val", context_length=16, share=BatchShare(2, 2), seed=0)
    first = [val.micro_batch(i, 0)[0] for i in range(2)]
    read = val.documents_read
    assert 0 < read <= 8
    again = [val.micro_batch(i, 0)[0] for i in range(2)]
    assert val.documents_read == read and all((a == b).all() for a, b in zip(first, again))
    held_out_bytes = [b for doc in documents()[:8] for b in (*doc.encode(), 256)]
    assert first[0][0].tolist() == held_out_bytes[:16]
    with pytest.raises(UserError, match="data.val_documents: the 8 held-out documents give .* lower eval.eval_iters"):
        val.micro_batch(100, 0)


def test_a_dataset_without_a_validation_split_trains_and_evaluates(tmp_path: Path) -> None:
    params, _ = prepared(tmp_path, max_steps=8)
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    metrics = evaluate.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert summary["step"] == 8 and summary["val_loss"] > 0 and metrics["val_loss"] > 0

    needs_split = validate_params(stream_tree(tmp_path, {"val_split": "validation"}), "test")
    with pytest.raises(UserError, match=r"data.val_split 'validation': cannot open .* set data.val_split: null"):
        tokenize.run(needs_split, data_root=tmp_path / "data2")


def test_meta_pins_the_revision_and_the_local_files_content(tmp_path: Path) -> None:
    """A stream's meta.json (what train depends on) names its revision and changes with its local files."""
    params, data_dir = prepared(tmp_path, {"revision": "v1.0"})
    files = [Path(f) for f in params.data.data_files["train"]]
    assert params.data.corpus_files() == files  # what the source stage records
    first = read_meta(data_dir)
    assert first.revision == "v1.0" and first.source_sha256 == files_digest(files) is not None
    files[0].write_text(files[0].read_text() + json.dumps({"text": "one more document"}) + "\n")
    tokenize.run(params, data_root=tmp_path / "data")
    assert read_meta(data_dir).source_sha256 != first.source_sha256


def test_a_validation_split_is_used_when_named(tmp_path: Path) -> None:
    tree = stream_tree(tmp_path, {"val_split": "validation"}, max_steps=4)
    tree["data"]["data_files"]["validation"] = [str(tmp_path / "corpus" / "part-0.jsonl")]
    params = validate_params(tree, "test")
    tokenize.run(params, data_root=tmp_path / "data")
    assert train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")["val_loss"] > 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"val_documents": 0}, "test: data.val_documents: input should be greater than 0"),
        ({"shuffle_buffer": 0}, "test: data.shuffle_buffer: input should be greater than 0"),
        ({"shuffle_buffr": 8}, "test: data.shuffle_buffr: unknown key; did you mean 'shuffle_buffer'?"),
    ],
)
def test_stream_params_are_validated(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamsError) as raised:
        validate_params(stream_tree(tmp_path, data), "test")
    assert message in str(raised.value), str(raised.value)


def launch_two_ranks(tmp_path: Path, params_file: Path, out_dir: Path) -> str:
    result = launch_train(params_file, tmp_path / "data", out_dir)
    assert "--standalone --nproc-per-node=2" in result.stdout
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_resume_exactly_under_torchrun(tmp_path: Path, strategy: str) -> None:
    tree = stream_tree(tmp_path, max_steps=12, checkpoint_every=4, strategy=strategy)
    tree["launch"] = {"nproc_per_node": 2}
    params_file = write_params(tmp_path / "params.yaml", tree)
    tokenize.run(load(params_file), data_root=tmp_path / "data")
    launch_two_ranks(tmp_path, params_file, tmp_path / "full")
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    step_4 = "step-0000004" if strategy == "fsdp" else "step-0000004.pt"
    if strategy == "fsdp":  # a step folder: its shards and run.pt (the stream positions)
        shutil.copytree(tmp_path / "full" / "checkpoints" / step_4, resumed / "checkpoints" / step_4)
    else:
        shutil.copy(tmp_path / "full" / "checkpoints" / step_4, resumed / "checkpoints" / "last.pt")
    shutil.copytree(tmp_path / "full" / "plots", resumed / "plots")
    assert "resumed from step 4" in launch_two_ranks(tmp_path, params_file, resumed)
    assert train_losses(resumed) == train_losses(tmp_path / "full")  # bitwise: gloo sums in the same order

    at_4 = stream_states(tmp_path / "full", step_4)
    end = stream_states(resumed, "last.pt")
    full = stream_states(tmp_path / "full", "last.pt")
    for rank in range(2):
        assert full[rank]["position"] == end[rank]["position"] > at_4[rank]["position"] > 0
        assert end[rank]["read_here"] == end[rank]["position"] - at_4[rank]["position"]
    assert full[0]["buffer"] != full[1]["buffer"]


def test_a_missing_text_column_is_named_before_training(tmp_path: Path) -> None:
    params = validate_params(stream_tree(tmp_path, {"text_field": "body"}), "test")
    with pytest.raises(UserError, match=r"data.text_field 'body' is not a column of json \(\['text'\]\)"):
        tokenize.run(params, data_root=tmp_path / "data")
