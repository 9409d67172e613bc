"""The training loop: one code path for one CPU process, N processes under torchrun, and N nodes.

``train(params, data_dir, out_dir)`` runs ``training.max_steps`` optimizer
steps (or stops at ``training.stop_at``). Read it top to bottom: ``Trainer.loop`` is the loop; each part it
calls decides its own timing and owns its state, as in torchtitan's trainer:

- ``nanugpt.train.build``: the run's parts (model, optimizer, schedule, scaler,
  loss, batch sources) and the gradient accumulation;
- ``nanugpt.train.step``: one optimizer step over the global batch;
- ``nanugpt.train.validator``: evaluation and the best val loss;
- ``nanugpt.train.checkpointer``: when to save, where to resume from;
- ``nanugpt.metrics.train_metrics``: per-step losses and throughput, sent to the sinks of
  ``nanugpt.metrics.sinks`` (CSV files DVC plots, W&B, the console line);
- ``nanugpt.train.previous_run``: an earlier run's outputs, kept until this run has
  saved a checkpoint, and put back if it fails before.

A checkpoint is the sum of the parts' ``state_dict()`` (``Trainer.state_dict``).
Outputs under ``out_dir`` (rank 0 only): ``checkpoints/`` (``last.pt``, the
newest step files, ``best.pt``; under ``training.strategy: fsdp`` step folders
every rank writes its shards into, ``last`` and ``best/``), ``plots/train.csv``, ``plots/val.csv`` and
``dvclive/`` (``logging.dvclive``), ``tensorboard/`` (``logging.tensorboard``),
``wandb/`` (``logging.wandb``), ``run_info.json``, and ``train_summary.json``.
SIGTERM, SIGINT and SIGUSR1 save a checkpoint at the end of the current step
and stop, so a preempted or requeued job resumes where it was
(``training.resume: auto``). A run resumed at its last step changes
nothing.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from nanugpt.checkpoint import store
from nanugpt.config.protocols import MetricSink, MixedBatches, ReportingSchedule
from nanugpt.config.schema import Params
from nanugpt.data.hf_dataset import batches_state, load_batches_state, skip_batches
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.distributed.device import peak_flops
from nanugpt.distributed.process_group import DistInfo, any_rank, barrier, process_group
from nanugpt.distributed.signals import StopRequest
from nanugpt.errors import TrainingError
from nanugpt.eval.evaluate import batch_count, evaluate_split
from nanugpt.eval.task_curve import TaskCurve
from nanugpt.files.atomic import append_line, finite_json, write_json, write_text
from nanugpt.metrics.sinks import (
    PLOT_FILES,
    ConsoleSink,
    DvcLiveSink,
    TensorBoardSink,
    ThreadedSink,
    WandbSink,
    check_sinks,
    csv_sinks,
)
from nanugpt.metrics.train_metrics import TrainMetrics
from nanugpt.train import run_info
from nanugpt.train.build import build_run, wrap_model
from nanugpt.train.checkpointer import Checkpointer, load_rng_state, rng_state
from nanugpt.train.environment import check_resume, fingerprint
from nanugpt.train.previous_run import PreviousRun
from nanugpt.train.profiler import StepProfiler
from nanugpt.train.spikes import RollBack, SpikeGuard
from nanugpt.train.step import TrainStep
from nanugpt.train.validator import Validator

CHECKPOINT_LOG = Path("logs") / "checkpoints.jsonl"  # under OUT_DIR: a line per checkpoint written, appended


@dataclass
class Progress:
    """Where the run is: optimizer steps done and tokens trained on."""

    step: int = 0
    tokens_seen: int = 0

    def advance(self, tokens: int) -> int:
        """Count one more step of ``tokens``; return the new step."""
        self.step += 1
        self.tokens_seen += tokens
        return self.step

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]


def train(
    params: Params,
    data_dir: Path,
    out_dir: Path,
    launch_command: str | None = None,
    sinks: Sequence[MetricSink] = (),
) -> dict[str, Any]:
    """Run the training loop; return a summary (final losses, steps, tokens/s). ``sinks`` receive the
    metrics on rank 0 besides those ``params.logging`` asks for."""
    with process_group(params.general.device_type) as info:
        return Trainer(params, data_dir, out_dir, info=info, launch_command=launch_command, sinks=sinks).run()


class Trainer:
    """One training run: its parts, and the loop over them."""

    def __init__(
        self,
        params: Params,
        data_dir: Path,
        out_dir: Path,
        *,
        info: DistInfo,
        launch_command: str | None,
        sinks: Sequence[MetricSink] = (),
    ):
        check_sinks(params)  # on every rank: all stop at once, none waits for rank 0 at a collective
        self.params, self.data_dir, self.out_dir, self.info = params, data_dir, out_dir, info
        self.launch_command, self.extra_sinks = launch_command, list(sinks)
        self.parts = build_run(params, data_dir, info, self.log)
        self.progress = Progress()
        self.validator = Validator(
            self.parts.val_batches,
            every=params.eval.eval_every,
            iters=params.eval.eval_iters,
            info=info,
            dtype=self.parts.autocast_dtype,
            loss_fn=self.parts.loss_fn,
        )
        self.checkpointer = Checkpointer(
            out_dir / "checkpoints",
            params,
            info,
            log=self.log,
            model=self.parts.model,
            optimizer=self.parts.optimizer,
            data_digest=self.parts.meta.digest(),
            on_saved=self.checkpoint_saved,
        )
        self.previous = PreviousRun(out_dir)
        self.guard = SpikeGuard(params.training.spike)
        self.environment = fingerprint()
        self.last_checkpoint: int | None = None  # the step of this run's newest checkpoint
        self.wandb: WandbSink | None = None
        self.task_curve = (
            TaskCurve(
                params,
                data_root=data_dir.parent.parent,
                encode=tokenizer_from_meta(self.parts.meta).encode,
                info=info,
                dtype=self.parts.autocast_dtype,
                log=self.log,
            )
            if params.eval.tasks_every
            else None
        )
        self.sizes = {  # the run's size: in every interval's row, so that every sink has it
            "run/parameters": float(sum(p.numel() for p in self.parts.model.parameters())),
            "run/tokens_per_step": float(self.parts.tokens_per_step),
            "run/max_tokens": float(self.parts.tokens_per_step * params.training.max_steps),
        }
        self.metrics: TrainMetrics

    def log(self, message: str) -> None:
        """A line on rank 0's console (through tqdm, so a progress bar stays below it)."""
        if self.info.is_main:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: the sum of the parts' states."""
        parts, params = self.parts, self.params
        model_state, optimizer_state = self.checkpointer.model_optimizer_state()
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": parts.schedule.state_dict(),
            "scaler": parts.scaler.state_dict(),
            **self.progress.state_dict(),
            "train_loss": self.metrics.train_loss,
            **self.validator.state_dict(),
            "spikes": self.guard.state_dict(),
            "rng": rng_state(),
            "data": {
                "seed": params.general.order_seed,
                "next_step": self.progress.step,
                **batches_state(parts.train_batches, self.info),  # a stream's position, per rank
            },
            "params": params.to_dict(),
            "environment": self.environment,
            "params_digest": self.checkpointer.digest,
            "data_digest": self.checkpointer.data_digest,
            "vocab_size": parts.vocab_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state_dict()``."""
        store.check_vocab(state, self.parts.meta, self.data_dir)
        strict = self.params.training.resume_env == "strict"
        if (changed := check_resume(state.get("environment"), self.environment, strict=strict)) is not None:
            self.log(changed)
        try:
            self.checkpointer.load_model_optimizer(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise store.CheckpointError(
                f"{self.params.training.resume}: checkpoint does not fit this model.* shape ({first})"
            ) from None
        self.parts.scaler.load_state_dict(state["scaler"])
        load_rng_state(state["rng"])
        self.progress.load_state_dict(state)
        self.validator.load_state_dict(state)
        self.guard.load_state_dict(state.get("spikes"))
        load_batches_state(self.parts.train_batches, state["data"], self.info)
        self.last_checkpoint = self.progress.step

    def run(self) -> dict[str, Any]:
        """Resume or start, train to ``training.last_step``, and return the summary."""
        if self.info.is_main and self.previous.recover():
            self.log(f"put back the outputs an interrupted run had set aside in {self.previous.aside}")
        state = self.checkpointer.resume_state()
        if state is not None:
            self.load_state_dict(state)
            self.log(f"resumed from step {self.progress.step} ({self.progress.tokens_seen:,} tokens seen)")
            if self.progress.step >= self.params.training.last_step:
                return self.finished(state)
        elif self.info.is_main and (moved := self.previous.set_aside()):
            self.log(
                f"set aside the earlier run's {', '.join(moved)} in {self.previous.aside}: deleted when this "
                "run saves its first checkpoint, put back if it fails before"
            )
        del state
        if self.progress.step == 0:  # dropout and anything else random: the seed per rank (same init everywhere)
            torch.manual_seed(self.params.general.seed + self.info.rank)
        model = wrap_model(self.parts.model, self.params, self.info)
        try:
            while True:
                try:
                    return self.loop(model)
                except RollBack as rollback:
                    self.roll_back(rollback)
        except BaseException:
            if self.info.is_main:
                self.previous.restore()  # a no-op once this run has saved a checkpoint
            raise

    def roll_back(self, rollback: RollBack) -> None:
        """Reload the newest checkpoint, from before ``rollback``'s spike, and skip the batches up to the spike's
        (``nanugpt.train.spikes``)."""
        state = self.checkpointer.newest_state()
        if state is None:
            raise TrainingError(f"loss spike at step {rollback.spike.step}: no checkpoint left to roll back to")
        rollbacks, skipped = self.guard.rollbacks, self.guard.skipped_updates  # this run's, newer than the state's
        self.load_state_dict(state)
        self.guard.rollbacks, self.guard.skipped_updates = rollbacks, skipped
        record = self.guard.record_rollback(rollback.spike, self.progress.step)
        first, last = record["skipped_batches"]
        skip_batches(self.parts.train_batches, range(first, last + 1), self.parts.accum)
        self.log(
            f"{rollback.spike.describe(self.guard.options.factor, self.guard.options.window)}: rolled back to the "
            f"checkpoint of step {self.progress.step} and skipped the batches of data steps {first}-{last} "
            f"(rollback {len(self.guard.rollbacks)} of at most {self.guard.options.max_rollbacks})"
        )

    def loop(self, model: torch.nn.Module) -> dict[str, Any]:
        """Train from ``progress.step`` to ``training.last_step``; return the summary."""
        t, parts, progress = self.params.training, self.parts, self.progress
        train_step = TrainStep(
            parts,
            model,
            self.info,
            peak_lr=self.params.optimizer.lr,
            dtype=parts.autocast_dtype,
            grad_clip=t.grad_clip,
            guard=self.guard,
        )
        metrics = self.metrics = self.start_metrics()
        bar = tqdm(total=t.last_step, initial=progress.step, desc="train", disable=None if self.info.is_main else True)
        stop = StopRequest()
        profiler = StepProfiler(t.profile, self.out_dir, self.info, self.log)
        model.train()
        failed = True  # until the loop ends by itself (or asks for a rollback)
        try:
            while progress.step < t.last_step:
                result = train_step(progress.step)
                step = progress.advance(parts.tokens_per_step)
                metrics.record(step, progress.tokens_seen, result.lr, result.loss, result.grad_norm)
                profiler.step(step)
                bar.update(1)
                final = step == t.last_step
                stopping, time_due = any_rank((stop.signal is not None, self.checkpointer.time_due()), self.info)
                validate = self.validator.should_validate(step, final)
                save = self.checkpointer.should_save(step, final, stopping, time_due)
                tasks = self.task_curve is not None and self.task_curve.should_run(step, final)
                if not (metrics.should_log(step) or validate or save or tasks):
                    continue
                if self.diverged(metrics.reduce(), step):
                    break
                try:
                    self.guard.check_interval(metrics.interval(), self.last_checkpoint)
                except RollBack:
                    failed = False
                    raise
                extra = self.run_figures()
                figures = self.validate(model, step, extra) if validate else None
                if tasks:
                    with metrics.clock.paused():  # the plain model: HellaSwag's varying shapes would recompile
                        extra.update(self.task_curve.run(parts.model, step))  # type: ignore[union-attr]
                metrics.write(step, figures, extra)
                if save:
                    self.save(step, blocking=stopping or final)
                if stopping and not final:
                    barrier(self.info)  # no rank exits (which can end the job step) while rank 0 still saves
                    self.log(f"received signal {stop.signal}: saved a checkpoint at step {step} and stopped")
                    raise SystemExit(128 + (stop.signal or signal.SIGTERM))
            failed = False
        finally:
            stop.restore()
            profiler.close()
            bar.close()
            self.wait_for_checkpoints(failed)
            metrics.close(failed)
        return self.finish()

    def run_figures(self) -> dict[str, float]:
        """The figures of the run besides the interval's: the time since the last checkpoint, the spike guard's,
        and the run's size (parameters and tokens, the same in every row: every sink has them as metadata)."""
        return {
            "time/since_checkpoint_s": self.checkpointer.seconds_since_save(),
            **self.guard.figures(),
            **self.sizes,
            **{f"sources/{name}/tokens": tokens for name, tokens in self.source_tokens().items()},
        }

    def source_tokens(self) -> dict[str, int]:
        """The train tokens each source of a mixture gave so far, by name; none for other data."""
        batches = self.parts.train_batches
        if not isinstance(batches, MixedBatches):
            return {}
        data_steps = self.progress.step + self.guard.data_offset  # the batches a rollback skipped were drawn too
        return batches.tokens_by_source(data_steps)

    def wait_for_checkpoints(self, failed: bool) -> None:
        """Let the background checkpoint writes finish (``training.async_checkpoint``). Where the run already
        fails, an error of a write is reported, not raised over the run's own."""
        try:
            self.checkpointer.wait()
        except Exception as exc:
            if not failed:
                raise
            self.log(f"a background checkpoint write failed as well: {exc}")

    def start_metrics(self) -> TrainMetrics:
        """Write ``run_info.json`` and open the metric sinks (rank 0); the metrics of this run."""
        params, parts, info = self.params, self.parts, self.info
        sinks: list[MetricSink] = []
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            collected = run_info.collect(
                params.to_dict(), str(info.device), info.world_size, info.hosts, self.launch_command
            )
            collected["size"] = {key.removeprefix("run/"): int(value) for key, value in self.sizes.items()}
            collected["environment"] = self.environment
            if self.guard.active:
                collected["spikes"] = self.guard.record()
            if params.training.resume not in ("auto", "never"):  # resumed by path: from where, and what changed
                collected["resumed_from"] = {
                    "checkpoint": self.params.training.resume,
                    "step": self.progress.step,
                    "changed": {
                        key: {"checkpoint": old, "this_run": new}
                        for key, (old, new) in self.checkpointer.changed.items()
                    },
                }
            write_json(self.out_dir / "run_info.json", collected)
            if params.logging.dvclive:
                sinks += csv_sinks(self.out_dir / "plots", parts.loss_fn.metric_names, self.progress.step)
                sinks.append(ThreadedSink(DvcLiveSink(self.out_dir / "dvclive", params.to_dict(), self.progress.step)))
            if params.logging.tensorboard:
                sinks.append(TensorBoardSink(self.out_dir / "tensorboard", self.progress.step))
            if params.logging.wandb:
                self.wandb = self.wandb_sink()
                sinks.append(self.wandb)
            sinks += [*self.extra_sinks, ConsoleSink(self.log, params.training.last_step)]
            self.log(
                f"training {sum(p.numel() for p in parts.model.parameters()):,} parameters on "
                f"{info.world_size} x {info.device}, {parts.accum} micro-steps of "
                f"{params.training.device_batch_size} x {params.model.context_length} tokens per process per "
                f"step, {parts.tokens_per_step:,} tokens per step"
            )
        flops = parts.model.flops_per_token()
        peak = peak_flops(info.device, params.training.peak_flops, params.general.dtype)
        return TrainMetrics(
            sinks,
            info,
            log_every=params.training.log_every,
            max_steps=params.training.last_step,
            tokens_per_step=parts.tokens_per_step,
            flops_per_token=flops,
            peak_flops=peak,
            start_step=self.progress.step,
            optimizer=parts.optimizer,
            model=parts.model,
        )

    def wandb_sink(self) -> WandbSink:
        """The W&B run: the resolved params as config, and as a file beside ``run_info.json`` in an artifact."""
        params = self.params
        resolved = self.out_dir / "wandb" / "params.yaml"
        resolved.parent.mkdir(parents=True, exist_ok=True)
        write_text(resolved, yaml.safe_dump(params.to_dict(), sort_keys=False))
        return WandbSink(
            params.general.project_name,
            params.general.run_name,
            params.to_dict(),
            self.out_dir,
            files=[resolved, self.out_dir / "run_info.json"],
            stage="train",
            new_run=self.progress.step == 0,  # a resume continues the run; a start from step 0 is a new one
            start_step=self.progress.step,
        )

    def diverged(self, losses: list[float], step: int) -> bool:
        """False while every loss is finite; True where a sweep schedule ends at divergence; else an error."""
        bad = next((loss for loss in losses if not math.isfinite(loss)), None)
        if bad is None:
            return False
        if isinstance(self.parts.schedule, ReportingSchedule):
            self.log(
                f"train loss is {bad} at step {step}: the sweep diverged; stopping it here "
                "(the diverged state is not saved)"
            )
            return True
        raise TrainingError(f"train loss is {bad} at step {step}; lower optimizer.lr")

    def validate(self, model: torch.nn.Module, step: int, extra: dict[str, float]) -> dict[str, float]:
        """Evaluate (outside the training time) and save ``best.pt`` at a new best val loss; the figures, the best
        loss so far and the gap to the interval's train loss. ``train/<metric>`` of a loss with metrics (e.g.
        accuracy) go into ``extra``."""
        with self.metrics.clock.paused():
            figures, improved = self.validator.validate(model, step, self.parts.model)
            extra.update(self.train_figures(model))
            extra.update(self.validator.source_losses(model, self.parts.model))
            if improved:
                self.checkpointer.save_best(self.state_dict())
        assert self.validator.best_loss is not None, "validate() has just set it"
        train_losses = [loss for _, loss in self.metrics.interval()]
        gap = figures["loss"] - sum(train_losses) / len(train_losses)
        return {**figures, "best_loss": self.validator.best_loss, "gap": gap}

    def train_figures(self, model: torch.nn.Module) -> dict[str, float]:
        """``train/<metric>`` of the loss's metrics (e.g. ``train/accuracy``) on ``eval.eval_iters`` fixed train
        batches (those of data steps 0, 1, ...); none for a loss without metrics, or for a stream of batches
        (which gives its batches in order only)."""
        parts = self.parts
        if not parts.loss_fn.metric_names or hasattr(parts.train_batches, "state_dict"):
            return {}
        figures = evaluate_split(
            model,
            parts.train_batches,
            iters=batch_count(self.params.eval.eval_iters, self.validator.batches),  # type: ignore[arg-type]
            info=self.info,
            dtype=parts.autocast_dtype,
            loss_fn=parts.loss_fn,
            plain=parts.model,
        )
        return {f"train/{name}": figures[name] for name in parts.loss_fn.metric_names}

    def save(self, step: int, *, blocking: bool) -> None:
        """Save the state of ``step`` (outside the training time): in the background with
        ``training.async_checkpoint``, unless ``blocking`` (the last save, and the one before a signal's exit)."""
        with self.metrics.clock.paused():
            self.metrics.flush()  # the sinks' files have every row up to the checkpoint's step
            self.checkpointer.save(step, self.state_dict(), blocking=blocking)
        self.last_checkpoint = step

    def checkpoint_saved(self, record: dict[str, Any]) -> None:
        """A checkpoint is written (rank 0; from the background writer's thread under
        ``training.async_checkpoint``): its line in ``OUT_DIR/logs/checkpoints.jsonl``, its W&B artifact, and after
        a step checkpoint the earlier run's outputs are deleted. The log is beside the console logs, not in
        ``checkpoints/``: its times would make a rerun's checkpoints folder differ from the first (DVC would then
        run every stage after train again)."""
        (self.out_dir / CHECKPOINT_LOG).parent.mkdir(parents=True, exist_ok=True)
        append_line(self.out_dir / CHECKPOINT_LOG, json.dumps(finite_json(record)))
        if self.wandb is not None:
            self.wandb.log_checkpoint(record)
        if record["kind"] == "step":
            self.previous.discard()

    def finish(self) -> dict[str, Any]:
        """Write ``train_summary.json`` and return it."""
        summary = {
            **self.metrics.summary(self.progress.step, self.progress.tokens_seen),
            "val_loss": self.validator.last_loss,
            "best_val_loss": self.validator.best_loss,
        }
        if self.guard.active:
            summary["spikes"] = self.guard.record()
        if tokens := self.source_tokens():
            losses = self.validator.last_source_losses
            summary["sources"] = {
                name: {"tokens": count, "val_loss": losses.get(name)} for name, count in sorted(tokens.items())
            }
        if isinstance(self.parts.schedule, ReportingSchedule) and self.metrics.history_losses:  # an lr range test
            summary["schedule"] = self.parts.schedule.report(self.metrics.history_lrs, self.metrics.history_losses)
        if self.info.is_main:
            write_json(self.out_dir / "train_summary.json", summary)
            self.previous.discard()
        tokens_per_s = summary["tokens_per_s"] or 0.0
        self.log(
            f"done: {summary['step']} steps, val loss {summary['val_loss']}, {tokens_per_s:,.0f} tok/s while "
            f"training, {summary['seconds']:.1f} s in all"
        )
        return summary

    def finished(self, state: dict[str, Any]) -> dict[str, Any]:
        """A run resumed at its last step: nothing to train, and every output stays as it is. Outputs that
        are missing (Snakemake and DVC delete a stage's outputs before they rerun it) are written again from
        the checkpoint: ``run_info.json``, ``train_summary.json`` (its losses, not its timings), the plots'
        CSV files (their header only: the rows of the run are gone with the files) and dvclive's files (one point,
        the checkpoint's losses at its step)."""
        self.log(
            f"nothing left to train: step {self.params.training.last_step} is reached; outputs present stay as they are"
        )
        path = self.out_dir / "train_summary.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        summary = {**self.progress.state_dict(), "train_loss": state.get("train_loss"), **self.validator.state_dict()}
        if self.info.is_main:
            info, plots = self.info, self.out_dir / "plots"
            if not (self.out_dir / "run_info.json").exists():
                collected = run_info.collect(
                    self.params.to_dict(), str(info.device), info.world_size, info.hosts, self.launch_command
                )
                write_json(self.out_dir / "run_info.json", collected)
            if self.params.logging.dvclive and not all((plots / f).exists() for f in PLOT_FILES):
                for sink in csv_sinks(plots, self.parts.loss_fn.metric_names, self.progress.step):
                    sink.close()  # rows up to the checkpoint's step kept, a missing file written with its header
            live = self.out_dir / "dvclive"
            if self.params.logging.dvclive and not (live / "metrics.json").exists():
                sink = DvcLiveSink(live, self.params.to_dict(), self.progress.step)
                losses = {"train/loss": summary["train_loss"], "val/loss": summary["val_loss"]}
                sink.write(self.progress.step, {k: v for k, v in losses.items() if v is not None and math.isfinite(v)})
                sink.close()
            write_json(path, summary)
            self.log(f"wrote the missing outputs of the finished run from {self.checkpointer.folder}")
        return summary
