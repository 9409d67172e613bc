"""pipeline.publish: the finished run's last and best checkpoints linked into OUT_DIR/model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nanugpt.checkpoint import sharded, store
from pipeline.publish import publish


def working_folder(tmp_path: Path) -> Path:
    """A checkpoints folder as a .pt run leaves it: two step files, last.pt a link to the newer, best.pt, last.json."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (4, 8):
        (folder / f"step-{step:07d}.pt").write_bytes(f"state {step}".encode())
    store.point_last_at(folder, folder / "step-0000008.pt")
    (folder / "best.pt").write_bytes(b"best state")
    (folder / "last.json").write_text(json.dumps({"step": 8, "last": "last.pt"}))
    return folder


def test_last_and_best_are_linked_and_step_files_stay_behind(tmp_path: Path) -> None:
    folder, model = working_folder(tmp_path), tmp_path / "model"
    placed = publish(folder, model)
    assert placed == ["last.pt", "best.pt", "last.json"]
    assert sorted(p.name for p in model.iterdir()) == ["best.pt", "last.json", "last.pt"]
    assert (model / "last.pt").stat().st_ino == (folder / "step-0000008.pt").stat().st_ino  # a link, not a copy
    assert (model / "best.pt").read_bytes() == b"best state"


def test_a_run_that_goes_on_leaves_the_published_files_as_they_were(tmp_path: Path) -> None:
    folder, model = working_folder(tmp_path), tmp_path / "model"
    publish(folder, model)
    (folder / "step-0000012.pt").write_bytes(b"state 12")
    store.point_last_at(folder, folder / "step-0000012.pt")  # replaces last.pt whole, as every save does
    os.remove(folder / "step-0000008.pt")  # keep_last drops the older step file
    assert (model / "last.pt").read_bytes() == b"state 8"


def test_publishing_again_replaces_the_whole_folder(tmp_path: Path) -> None:
    folder, model = working_folder(tmp_path), tmp_path / "model"
    publish(folder, model)
    (folder / "best.pt").unlink()  # a later run without validation has no best
    assert publish(folder, model) == ["last.pt", "last.json"]
    assert not (model / "best.pt").exists()


def test_a_sharded_last_link_becomes_a_folder_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    step = folder / "step-0000008"
    step.mkdir(parents=True)
    (step / "__0_0.distcp").write_bytes(b"shard")
    (step / ".metadata").write_bytes(b"metadata")
    sharded.point_last_at(folder, step)
    model = tmp_path / "model"
    assert publish(folder, model) == ["last"]
    assert (model / "last").is_dir() and not (model / "last").is_symlink()
    assert (model / "last" / "__0_0.distcp").stat().st_ino == (step / "__0_0.distcp").stat().st_ino
    assert (model / "last" / ".metadata").read_bytes() == b"metadata"
