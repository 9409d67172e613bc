"""A run whose checkpoints are driven by a clock the test controls; under torchrun, each rank's clock runs at
its own rate (``--rates``) and each rank writes the steps it saved at to ``OUT/saved-rank<r>.json``.

``python -m torch.distributed.run --nproc-per-node=2 tests/time_checkpoint_worker.py PARAMS DATA OUT --rates 1 1.5``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nanugpt.config.params import load_params
from nanugpt.distributed.process_group import process_group
from nanugpt.train.checkpointer import Checkpointer
from nanugpt.train.trainer import Trainer


class StepClock:
    """A clock that moves ``rate`` seconds forward at each reading."""

    def __init__(self, rate: float):
        self.rate, self.now = rate, 0.0

    def __call__(self) -> float:
        self.now += self.rate
        return self.now


class RecordingTrainer(Trainer):
    """A ``Trainer`` whose checkpointer reads ``clock``, and which records the steps it saved at."""

    def __init__(self, *args: Any, clock: StepClock, **kwargs: Any):
        super().__init__(*args, **kwargs)
        folder, parts = self.out_dir / "checkpoints", self.parts
        self.checkpointer = Checkpointer(
            folder, self.params, self.info, log=self.log, model=parts.model, optimizer=parts.optimizer, clock=clock
        )
        self.saved: list[int] = []

    def save(self, step: int, *, blocking: bool) -> None:
        self.saved.append(step)
        super().save(step, blocking=blocking)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("params", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rates", type=float, nargs="+", required=True, help="clock seconds per reading, per rank")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    with process_group(params.general.device_type) as info:
        trainer = RecordingTrainer(
            params, args.data, args.out, info=info, launch_command=None, clock=StepClock(args.rates[info.rank])
        )
        trainer.run()
        (args.out / f"saved-rank{info.rank}.json").write_text(json.dumps(trainer.saved))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
