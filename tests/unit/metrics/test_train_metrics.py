"""The interval's figures under FSDP2: the weight norm of a model whose parameters are part sharded, part whole."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from nanugpt.distributed.fsdp import is_dtensor
from nanugpt.metrics.train_metrics import total_norm
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
