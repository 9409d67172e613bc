"""``python -m pipeline.summary``: what a run came to, in a few lines (``make run``'s last screen)."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import tiny_params, write_params

from nanugpt.config.params import load_params
from pipeline import summary
from stages import evaluate, generate, tokenize, train


def test_the_summary_of_a_run_is_a_few_lines_with_the_figures_a_run_is_judged_by(
    tmp_path: Path, corpus: Path, capsys
) -> None:
    """Issue 30, make run's last screen: dvc metrics show printed a 25-column table, mostly dashes."""
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus)))
    out = tmp_path / "out"
    assert summary.lines(out) == [
        f"run in {out}",
        "  evaluation: none yet (python -m stages.evaluate)",
        "  training: none yet (python -m stages.train)",
        "  checkpoints: none",
        "  samples: none yet (python -m stages.generate)",
    ]
    tokenize.run(params, data_root=tmp_path / "data")
    for stage in (train, evaluate, generate):
        stage.run(params, data_root=tmp_path / "data", out_dir=out)
    capsys.readouterr()
    assert summary.main([str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5 and printed[0] == f"run in {out}"
    assert re.fullmatch(r"  val loss \d\.\d{4} \(perplexity \d+\.\d\d\) at step 20", printed[1]), printed[1]
    assert re.fullmatch(
        r"  trained 20 steps on 2,560 tokens in 0:\d\d \([\d,]+ tokens/s\), best val loss \d\.\d{4}", printed[2]
    )
    assert printed[3] == f"  checkpoints in {out / 'checkpoints'}: last.pt (step 20), best.pt, 2 step checkpoint(s)"
    assert printed[4] == f"  samples: {out / 'samples.txt'}"
