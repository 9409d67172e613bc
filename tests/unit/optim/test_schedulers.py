"""Schedules built from params: lr at chosen steps against each formula, and the lr range test's sweep and report."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_params

from nanugpt.config.params import ParamsError, validate_params
from nanugpt.config.schema import Params

LR = 1e-3  # optimizer.lr


def schedule_params(max_steps: int = 100, optimizer: str = "adamw_nanogpt", **scheduler: object) -> Params:
    """Tiny params with the given schedule, validated through the registry; optimizer.lr is LR."""
    tree = tiny_params("corpus.txt", optimizer={"module": optimizer, "lr": LR}, training={"max_steps": max_steps})
    tree["scheduler"] = scheduler
    return validate_params(tree, "test")


def lr_at(params: Params, steps: list[int]) -> list[float]:
    """The lr the train loop sets at each step: optimizer.lr * factor(step)."""
    schedule = params.scheduler.build(params.training.max_steps, params.optimizer.lr)
    return [params.optimizer.lr * schedule.factor(s) for s in steps]


# max_steps 100, warmup 10: warmup lr = LR * (s + 1) / 10; afterwards progress p = (s - 10) / 90
STEPS = [0, 4, 9, 10, 40, 55, 99, 100]
WARMUP = [LR * 0.1, LR * 0.5, LR, LR]


def test_cosine_follows_its_formula() -> None:
    params = schedule_params(module="cosine", warmup_steps=10, min_lr_ratio=0.1)
    # LR * (0.1 + 0.9 * (1 + cos(pi p)) / 2): p = 1/3 -> 0.775, p = 1/2 -> 0.55, p = 89/90, p = 1 -> 0.1
    expected = [*WARMUP, LR * 0.775, LR * 0.55, LR * (0.1 + 0.45 * (1 + math.cos(math.pi * 89 / 90))), LR * 0.1]
    assert lr_at(params, STEPS) == pytest.approx(expected, rel=1e-12)


def test_linear_follows_its_formula() -> None:
    params = schedule_params(module="linear", warmup_steps=10, min_lr_ratio=0.1)
    # LR * (1 - 0.9 p): p = 1/3 -> 0.7, p = 1/2 -> 0.55, p = 89/90 -> 0.11, p = 1 -> 0.1
    expected = [*WARMUP, LR * 0.7, LR * 0.55, LR * 0.11, LR * 0.1]
    assert lr_at(params, STEPS) == pytest.approx(expected, rel=1e-12)


def test_constant_is_warmup_stable_decay() -> None:
    params = schedule_params(module="constant", warmup_steps=10, cooldown_steps=20)
    # flat at LR until step 80 = max_steps - cooldown_steps, then linear to min_lr_ratio (0) at step 100
    steps = [0, 9, 10, 50, 79, 80, 90, 99, 100]
    assert lr_at(params, steps) == pytest.approx([LR * 0.1, LR, LR, LR, LR, LR, LR * 0.5, LR * 0.05, 0.0], abs=1e-15)
    no_cooldown = schedule_params(module="constant", warmup_steps=10)
    assert lr_at(no_cooldown, [10, 99]) == [LR, LR]


def sweep(max_steps: int = 101, **options: object):
    params = schedule_params(max_steps, module="lr_range_test", min_lr=1e-5, max_lr=0.1, **options)
    return params.scheduler.build(max_steps, base_lr=params.optimizer.lr)


def test_lr_range_test_sweeps_absolute_lrs_exponentially() -> None:
    schedule = sweep()
    # the train loop's lr = optimizer.lr * factor; the sweep makes it min_lr, the geometric mean, max_lr
    lrs = [LR * schedule.factor(s) for s in (0, 25, 50, 100)]
    assert lrs == pytest.approx([1e-5, 1e-4, 1e-3, 1e-1], rel=1e-12)
    with pytest.raises(ParamsError, match=r"scheduler.max_lr: must be > min_lr \(0.1\)"):
        schedule_params(module="lr_range_test", min_lr=0.1, max_lr=0.01)


def synthetic_loss(lr: float) -> float:
    """Flat, a fall steepest at lr 1e-3 (log10 = -3), a minimum, then divergence past ~1e-2."""
    x = math.log10(lr)
    return 3.0 - 2.0 / (1 + math.exp(-4 * (x + 3))) + 20 * max(0.0, x + 2) ** 2


def test_lr_range_test_reports_a_tenth_of_the_smoothed_minimum() -> None:
    schedule = sweep()
    lrs = [schedule.lr(s) for s in range(101)]
    noise = [0.05 * math.sin(37 * s) for s in range(101)]  # deterministic wiggle the smoothing must remove
    losses = [synthetic_loss(lr) + n for lr, n in zip(lrs, noise)]
    losses[-3:] = [float("nan")] * 3  # diverged
    report = schedule.report(lrs, losses)
    clean = [synthetic_loss(lr) for lr in lrs]
    true_min_lr = lrs[clean.index(min(clean))]
    assert abs(math.log10(report["min_loss_lr"] / true_min_lr)) <= 0.1  # within 0.1 decade (2.5 grid steps)
    assert report["suggested_lr"] == pytest.approx(report["min_loss_lr"] / 10)
    assert abs(math.log10(report["steepest_lr"]) + 3) <= 0.2
    points = report["points"]  # one per finite loss, for a loss-vs-lr plot
    assert len(points) == 98 and set(points[0]) == {"lr", "loss", "smoothed_loss"}
    assert points[0]["lr"] == pytest.approx(1e-5) and points[0]["loss"] == losses[0]


def test_lr_range_test_drives_a_real_optimizer() -> None:
    # the train loop's contract end to end on a tiny model: group lr = optimizer.lr * factor(step)
    params = schedule_params(30, optimizer="adamw", module="lr_range_test", min_lr=1e-4, max_lr=1.0)
    schedule = params.scheduler.build(30, base_lr=params.optimizer.lr)
    torch.manual_seed(0)
    model = params.model.build(16)
    optimizer = params.optimizer.build(model, "cpu")
    x = torch.randint(0, 16, (4, 16))
    seen, losses = [], []
    for step in range(30):
        for group in optimizer.param_groups:
            group["lr"] = params.optimizer.lr * schedule.factor(step)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen.append(optimizer.param_groups[0]["lr"])
        losses.append(loss.item())
    assert seen == pytest.approx([schedule.lr(s) for s in range(30)]) and seen[-1] == pytest.approx(1.0)
    report = schedule.report(seen, losses)
    assert 1e-5 <= report["suggested_lr"] <= 0.1
    assert [p["lr"] for p in report["points"]] == seen
