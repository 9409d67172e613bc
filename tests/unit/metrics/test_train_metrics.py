"""The interval's figures: ``train/pred_loss`` (``predicted_loss``) on curves of known trend, and under FSDP2 the
weight norm of a model whose parameters are part sharded, part whole."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from nanugpt.distributed.fsdp import is_dtensor
from nanugpt.metrics.train_metrics import predicted_loss, total_norm
from nanugpt.models.nanogpt import NanoGPTOptions


@pytest.fixture
def one_rank_group() -> Iterator[None]:
    """A real process group of one rank (gloo, in this process): FSDP2 shards over it as over many."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_the_weight_norm_of_a_model_gathered_by_an_evaluation(one_rank_group: None) -> None:
    """Issue 30, case 1: after an evaluation's forward FSDP keeps the root's parameters gathered (whole tensors)
    beside the blocks' shards (DTensors) until the next step; a log at that step crashed in ``_foreach_norm``
    ("got mixed torch.Tensor and DTensor"), a run at step 100 of 200 where no checkpoint followed the evaluation."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = NanoGPTOptions(module="nanogpt", n_layer=2, n_head=2, n_embd=16, context_length=8).build(33)
    expected = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in model.parameters()))
    mesh = init_device_mesh("cpu", (1,))
    for block in model.transformer_blocks():
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 8, dtype=torch.long))
    kinds = {is_dtensor(p) for p in model.parameters()}
    assert kinds == {True, False}  # the mix the crash needed: the root's whole, the blocks' sharded
    assert total_norm(list(model.parameters())) == pytest.approx(expected, rel=1e-6)


def on_log_curve(a: float, b: float, steps: range) -> list[float]:
    """The losses a + b log(step) of ``steps``: a curve whose trend is known exactly."""
    return [a + b * math.log(step) for step in steps]


@pytest.mark.parametrize("step", [8, 9, 20, 333])
def test_a_loss_on_a_log_line_is_predicted_at_max_steps_exactly(step: int) -> None:
    losses = on_log_curve(4.0, -0.3, range(1, step + 1))
    for max_steps in (step, 1000, 50_000):
        assert predicted_loss(losses, step, max_steps) == pytest.approx(4.0 - 0.3 * math.log(max_steps), rel=1e-9)


def test_the_prediction_fits_the_last_half_of_the_steps_alone() -> None:
    early = [9.0, 0.5, 7.0, 30.0, 2.0, 11.0, 0.1, 5.0, 6.0, 3.0]  # warm-up noise, a spike: none of it counts
    losses = early + on_log_curve(3.0, -0.2, range(11, 21))
    assert predicted_loss(losses, 20, 400) == pytest.approx(3.0 - 0.2 * math.log(400), rel=1e-9)
    noisy_late = losses[:-1] + [losses[-1] + 0.5]
    assert predicted_loss(noisy_late, 20, 400) != pytest.approx(3.0 - 0.2 * math.log(400), rel=1e-3)


def test_after_a_resume_the_losses_are_those_of_the_steps_up_to_step() -> None:
    """A resumed run has the losses of the steps it ran: steps 101-120, not 1-20."""
    losses = on_log_curve(2.5, -0.1, range(101, 121))
    assert predicted_loss(losses, 120, 2000) == pytest.approx(2.5 - 0.1 * math.log(2000), rel=1e-9)
    assert predicted_loss(losses, 20, 2000) != pytest.approx(2.5 - 0.1 * math.log(2000), rel=1e-3)  # the wrong steps


def test_a_flat_curve_predicts_its_level_and_fewer_than_8_steps_predict_nothing() -> None:
    assert predicted_loss([1.75] * 12, 12, 10_000) == pytest.approx(1.75)
    for count in range(8):
        assert math.isnan(predicted_loss(on_log_curve(4.0, -0.3, range(1, count + 1)), count, 1000)), count
    assert math.isfinite(predicted_loss(on_log_curve(4.0, -0.3, range(1, 9)), 8, 1000))
