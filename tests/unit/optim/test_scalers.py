"""The keller scaler built from params: unit-norm gradients after unscale_, no state, and training with it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import tiny_params, write_params

from nanugpt.config.params import load_params, validate_params
from nanugpt.config.schema import Params
from nanugpt.errors import UserError
from stages import tokenize, train


def keller_params(**scaler: object) -> Params:
    return validate_params(
        tiny_params("corpus.txt", scaler={"module": "keller", **scaler}, training={"grad_clip": 0.0}), "test"
    )


@pytest.mark.parametrize("target_norm", [1.0, 0.5])
def test_unscale_gives_every_gradient_the_target_norm(target_norm: float) -> None:
    params = keller_params(target_norm=target_norm)
    torch.manual_seed(0)
    model = params.model.build(16)
    optimizer = params.optimizer.build(model, "cpu")
    scaler = params.scaler.build("cpu", "float32")
    x = torch.randint(0, 16, (4, 16))
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
    assert scaler.scale(loss) is loss
    scaler.scale(loss).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    scaler.unscale_(optimizer)
    for name, p in model.named_parameters():  # the smallest gradient norms here are ~1e-3 >> eps (1e-8)
        assert p.grad.norm().item() == pytest.approx(target_norm, rel=1e-4), name
        torch.testing.assert_close(p.grad, before[name] * (target_norm / (before[name].norm() + 1e-8)))
    weights = [p.detach().clone() for p in model.parameters()]
    scaler.step(optimizer)
    scaler.update()
    assert all(not torch.equal(p, w) for p, w in zip(model.parameters(), weights))  # the optimizer stepped


def test_state_is_empty_and_float16_is_refused() -> None:
    scaler = keller_params().scaler.build("cpu", "bfloat16")
    assert scaler.state_dict() == {}
    scaler.load_state_dict({})
    with pytest.raises(ValueError, match="no state"):
        scaler.load_state_dict({"scale": 65536.0})
    with pytest.raises(UserError, match="general.dtype to bfloat16 or float32, or use scaler amp"):
        keller_params().scaler.build("cuda", "float16")


def test_training_with_keller_normalisation(tmp_path: Path, corpus: Path) -> None:
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            tiny_params(
                corpus,
                scaler={"module": "keller"},
                training={"max_steps": 30, "grad_clip": 0.0, "checkpoint_every": 0},
                eval={"eval_every": 0},
            ),
        )
    )
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    with open(tmp_path / "out" / "plots" / "train.csv") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 30 and losses[-1] < losses[0] - 1.0, (losses[0], losses[-1])
    assert summary["val_loss"] < losses[0] - 1.0
