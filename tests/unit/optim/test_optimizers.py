"""Muon built from params: orthogonalised updates, the Muon/AdamW split, training, state, and sharding."""

from __future__ import annotations

import copy
import csv
import io
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import tiny_params, write_params
from torch import nn

from nanugpt.config.params import load_params, validate_params
from nanugpt.config.schema import Params
from nanugpt.optim.muon import (
    NS_COEFFICIENTS,
    Muon,
    _direct_iterations,
    _gram_iterations,
    gram_iterations_are_cheaper,
    newton_schulz,
    split_params,
)
from stages import tokenize, train

VOCAB = 65
MUON = {"module": "muon", "lr": 0.02, "adamw_lr": 3e-3, "momentum_warmup_steps": 10, "weight_decay": 0.01}


def muon_params(**optimizer: object) -> Params:
    """Tiny params (2 layers, 32 wide) with the Muon optimizer, validated through the registry."""
    return validate_params(tiny_params("corpus.txt", optimizer={**MUON, **optimizer}), "test")


def muon_setup(**optimizer: object) -> tuple[nn.Module, Muon]:
    params = muon_params(**optimizer)
    torch.manual_seed(0)
    model = params.model.build(VOCAB)
    return model, params.optimizer.build(model, "cpu")


def set_grads(model: nn.Module, step: int) -> None:
    """Deterministic gradients of the given step, the same in every process."""
    gen = torch.Generator().manual_seed(1000 + step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def ns_band(steps: int, smallest: float) -> tuple[float, float]:
    """Range of the NS polynomial iterated ``steps`` times over singular values in [smallest, 1]."""
    a, b, c = NS_COEFFICIENTS
    x = torch.logspace(torch.log10(torch.tensor(smallest)).item(), 0, 100_001, dtype=torch.float64)
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x.min().item(), x.max().item()


@pytest.mark.parametrize("shape", [(128, 512), (512, 128), (96, 128)])  # Gram iterations, Gram, direct
def test_newton_schulz_singular_values_near_one(shape: tuple[int, int]) -> None:
    # NS multiplies G = U S V^T by polynomials of G G^T, so it keeps U and V and maps each singular value
    # s / |G|_F through the scalar quintic 5 times. For a Gaussian 128 x 512 matrix s / |G|_F >= ~0.04;
    # from any start >= 0.01 the quintic lands in [0.682, 1.134] (computed below): that band is the bound.
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = newton_schulz(g, 5)
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    assert (s / s.square().sum().sqrt()).min() > 0.01
    low, high = ns_band(5, 0.01)
    assert 0.68 < low and high < 1.14  # "near 1": the iteration's band, not exact orthogonality
    svals = torch.linalg.svdvals(out.double())
    assert low - 1e-3 <= svals.min() and svals.max() <= high + 1e-3, (svals.min(), svals.max())
    # and it is exactly U f(S) V^T (float32 rounding only), so the singular vectors are the gradient's
    a, b, c = NS_COEFFICIENTS
    x = s / s.square().sum().sqrt()
    for _ in range(5):
        x = a * x + b * x**3 + c * x**5
    torch.testing.assert_close(out.double(), u @ torch.diag(x) @ vh, atol=2e-5, rtol=0)


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_gram_iterations_equal_direct_ones(steps: int) -> None:
    x = torch.randn(3, 64, 256, generator=torch.Generator().manual_seed(2))
    x = x / x.norm(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(_gram_iterations(x, steps), _direct_iterations(x, steps), atol=2e-6, rtol=0)


def test_gram_iterations_are_chosen_only_where_they_save_flops() -> None:
    assert gram_iterations_are_cheaper(128, 512, 5) and gram_iterations_are_cheaper(128, 384, 3)
    assert not gram_iterations_are_cheaper(128, 128, 5) and not gram_iterations_are_cheaper(128, 160, 5)


def test_newton_schulz_in_bfloat16_stays_in_the_band() -> None:
    # what GPUs run: bf16 rounding (2^-8) is corrected by the next iteration, so only the last one's shows
    g = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    svals = torch.linalg.svdvals(newton_schulz(g, 5, torch.bfloat16).float())
    low, high = ns_band(5, 0.01)
    assert low - 0.02 <= svals.min() and svals.max() <= high + 0.02, (svals.min(), svals.max())


def test_split_puts_embeddings_head_and_vectors_in_adamw() -> None:
    model, optimizer = muon_setup()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        (g["kind"], g["weight_decay"] > 0, sorted(names[id(p)] for p in g["params"])) for g in optimizer.param_groups
    ]
    hidden = [
        f"transformer.h.{i}.{m}.weight"
        for i in (0, 1)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert groups == [
        ("muon", True, sorted(hidden)),
        ("adamw", True, ["transformer.wpe.weight", "transformer.wte.weight"]),  # embeddings; the head is tied to wte
        ("adamw", False, sorted(n for n, p in model.named_parameters() if p.dim() == 1)),
    ]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_split_finds_untied_and_hf_style_heads_by_module_not_shape() -> None:
    class Untied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.hidden = nn.Linear(8, 8)
            self.lm_head = nn.Linear(8, 10, bias=False)

    class HFStyle(Untied):
        def __init__(self) -> None:
            super().__init__()
            del self.lm_head
            self.out = nn.Linear(8, 8, bias=False)  # square like a hidden matrix: only get_output_embeddings tells

        def get_output_embeddings(self) -> nn.Module:
            return self.out

    for model, head in ((Untied(), "lm_head.weight"), (HFStyle(), "out.weight")):
        names = {id(p): n for n, p in model.named_parameters()}
        split = {k: sorted(names[id(p)] for p in v) for k, v in split_params(model).items()}
        assert split == {
            "muon": ["hidden.weight"],
            "embedding": ["embed.weight"],
            "adamw_decay": [head],
            "adamw_no_decay": ["hidden.bias"],
        }


def test_adamw_groups_step_like_torch_adamw_at_their_own_lr() -> None:
    # the train loop sets every group's lr to optimizer.lr * factor; the AdamW groups must then step with
    # adamw_lr * factor (lr_ratio), exactly as torch's AdamW would
    model, optimizer = muon_setup()
    reference = copy.deepcopy(model)
    split = split_params(reference)
    factor = 0.5
    groups = [
        {"params": split["embedding"] + split["adamw_decay"], "weight_decay": 0.01},
        {"params": split["adamw_no_decay"], "weight_decay": 0.0},
    ]
    torch_adamw = torch.optim.AdamW(groups, lr=3e-3 * factor, betas=(0.9, 0.95), eps=1e-8)
    for step in range(3):
        for group in optimizer.param_groups:
            group["lr"] = 0.02 * factor
        set_grads(model, step)
        set_grads(reference, step)
        optimizer.step()
        torch_adamw.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if p.dim() != 2 or "wte" in name or "wpe" in name:
            torch.testing.assert_close(p, q, msg=name)


def test_embeddings_step_at_embed_lr_and_the_rest_at_adamw_lr() -> None:
    # AdamW's first step moves every element by lr (|m / sqrt(v)| = 1 after bias correction)
    model, optimizer = muon_setup(embed_lr=0.1, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    set_grads(model, 0)
    optimizer.step()
    moved = {n: (p - before[n]).abs() for n, p in model.named_parameters()}
    torch.testing.assert_close(moved["transformer.wte.weight"], torch.full_like(moved["transformer.wte.weight"], 0.1))
    bias = moved["transformer.h.0.attn.c_attn.bias"]
    torch.testing.assert_close(bias, torch.full_like(bias, 3e-3))


def test_momentum_warms_up_from_momentum_start() -> None:
    model, optimizer = muon_setup(nesterov=False)  # warm-up over 10 steps: 0.85, 0.86, ...
    weight = model.transformer.h[0].attn.c_proj.weight
    grads = []
    for step in range(2):
        set_grads(model, step)
        grads.append(weight.grad.clone())
        optimizer.step()
    buffer = optimizer.state[weight]["momentum_buffer"]
    torch.testing.assert_close(buffer, 0.86 * (0.15 * grads[0]) + 0.14 * grads[1])
    assert optimizer.state[weight]["step"] == 2


def test_state_dict_round_trips_through_a_weights_only_checkpoint() -> None:
    model, optimizer = muon_setup()
    for step in range(3):
        set_grads(model, step)
        optimizer.step()
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed, resumed_optimizer = muon_setup()
    resumed.load_state_dict(state["model"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    for step in range(3, 5):  # momentum warm-up, Adam moments and bias corrections all continue
        for m, opt in ((model, optimizer), (resumed, resumed_optimizer)):
            set_grads(m, step)
            opt.step()
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_muon_trains_a_tiny_model(tmp_path: Path, corpus: Path) -> None:
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            tiny_params(
                corpus, optimizer=MUON, training={"max_steps": 30, "checkpoint_every": 0}, eval={"eval_every": 0}
            ),
        )
    )
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    with open(tmp_path / "out" / "plots" / "train.csv") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 30 and losses[-1] < losses[0] - 1.0, (losses[0], losses[-1])
    assert summary["val_loss"] < losses[0] - 1.0


def muon_rank(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One process of the sharded run: 3 steps with equal gradients, then 1 step where rank 1 has zero
    gradients for every hidden matrix; saves its weights after each."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        model, optimizer = muon_setup()
        for step in range(3):
            set_grads(model, step)
            optimizer.step()
        torch.save(model.state_dict(), Path(out_dir) / f"equal-{rank}.pt")
        model, optimizer = muon_setup()
        set_grads(model, 0)
        if rank == 1:
            for p in optimizer.param_groups[0]["params"]:  # the Muon group
                p.grad.zero_()
        optimizer.step()
        torch.save(model.state_dict(), Path(out_dir) / f"rank1-zero-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_orthogonalisation_equals_the_single_process_update(tmp_path: Path) -> None:
    mp.spawn(muon_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    model, optimizer = muon_setup()
    initial = copy.deepcopy(model.state_dict())
    set_grads(model, 0)
    optimizer.step()
    one_step = copy.deepcopy(model.state_dict())
    for step in (1, 2):
        set_grads(model, step)
        optimizer.step()
    for rank in (0, 1):
        equal = torch.load(tmp_path / f"equal-{rank}.pt", weights_only=True)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(equal[name], value, atol=1e-6, rtol=0, msg=f"rank {rank}: {name}")
        # each layer-0 matrix is rank 0's (orthogonalised from real gradients), each layer-1 matrix rank 1's
        # (zero gradients: weight decay only): both ranks apply what the owner computed, whatever their own
        zero = torch.load(tmp_path / f"rank1-zero-{rank}.pt", weights_only=True)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            name = f"transformer.h.0.{m}.weight"
            torch.testing.assert_close(zero[name], one_step[name], atol=1e-6, rtol=0, msg=f"rank {rank}: {name}")
            name = f"transformer.h.1.{m}.weight"
            decayed = initial[name] * (1 - MUON["lr"] * MUON["weight_decay"])
            torch.testing.assert_close(zero[name], decayed, atol=1e-6, rtol=0, msg=f"rank {rank}: {name}")
