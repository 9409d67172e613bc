"""What a pipeline run came to, in a few lines: the last screen of ``make run``.

    python -m pipeline.summary [OUT_DIR]

Reads ``OUT_DIR`` (default ``$OUT_DIR`` or ``out``): the evaluate stage's ``metrics.json``, the train stage's
``train_summary.json``, and where the samples, checkpoints and export are. A stage that has not run is named
with the command that runs it. ``dvc metrics show`` prints every figure of every file; this prints the ones a
run is judged by.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from nanugpt.metrics.sinks import format_duration
from pipeline import paths
from pipeline.cli import run_command


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file's content; None where it is missing or unreadable."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def figure(value: Any, digits: int = 4) -> str:
    """A number as the summary prints it; ``-`` for none."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def lines(out: Path) -> list[str]:
    """The summary of the run in ``out``."""
    result = [f"run in {out}"]
    metrics, trained = read_json(paths.metrics_file(out)), read_json(out / "train_summary.json")
    if metrics is None:
        result.append("  evaluation: none yet (python -m stages.evaluate)")
    else:
        scores = [f"val loss {figure(metrics.get('val_loss'))} (perplexity {figure(metrics.get('val_ppl'), 2)})"]
        if "test_loss" in metrics:
            scores.append(f"test loss {figure(metrics['test_loss'])} (perplexity {figure(metrics.get('test_ppl'), 2)})")
        if "hellaswag_acc" in metrics:
            scores.append(f"HellaSwag accuracy {figure(metrics['hellaswag_acc'], 3)}")
        result.append(f"  {', '.join(scores)} at step {metrics.get('step', '-')}")
    if trained is None:
        result.append("  training: none yet (python -m stages.train)")
    else:
        speed = trained.get("tokens_per_s")
        result.append(
            f"  trained {trained.get('step', 0):,} steps on {trained.get('tokens_seen', 0):,} tokens in "
            f"{format_duration(trained.get('seconds') or 0)}"
            + (f" ({speed:,.0f} tokens/s)" if isinstance(speed, (int, float)) else "")
            + f", best val loss {figure(trained.get('best_val_loss'))}"
        )
    checkpoints = paths.checkpoint_dir(out)
    last = read_json(checkpoints / "last.json")
    if last is None:
        result.append("  checkpoints: none")
    else:
        steps = len([p for p in checkpoints.glob("step-*") if p.suffix in (".pt", "")])
        best = next((name for name in ("best.pt", "best") if (checkpoints / name).exists()), None)
        result.append(
            f"  checkpoints in {checkpoints}: {last.get('last')} (step {last.get('step')})"
            + (f", {best}" if best else "")
            + f", {steps} step checkpoint(s)"
        )
    samples = paths.samples_file(out)
    result.append(f"  samples: {samples}" if samples.is_file() else "  samples: none yet (python -m stages.generate)")
    if (out / "hf").is_dir():
        result.append(f"  Hugging Face export: {out / 'hf'}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print((__doc__ or "").strip())
        return 0

    def body() -> None:
        print("\n".join(lines(Path(argv[0]) if argv else paths.out_dir())))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
