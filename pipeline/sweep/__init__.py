"""Sweeps: a grid of params declared once, run as Snakemake jobs or DVC experiments, compared on one page.

A sweep file, ``sweeps/<name>.yaml``::

    base: ../params.yaml         # the params file every point starts from (relative to this file)
    grid:                        # dotted key -> values; every combination is a point
      optimizer.lr: [1.0e-3, 3.0e-3]
      model.n_embd: [32, 64]
      general.seed: [1, 2]       # repeats: the report groups them as mean and spread
    points:                      # optional, beside the grid: points of their own
      - {optimizer.lr: 1.0e-2, model.n_embd: 128}
      - {name: long, training.max_steps: 2000}   # a fixed name: editing its values re-runs it in place
    export: false                # also run the export stage of every point
    search:                      # optional: successive halving instead of every point to the end
      method: halving
      rungs: [50, 100, 300]      # step budgets; the last is every point's training.max_steps
      keep: 1/3                  # the share of a rung's points that continue to the next

Every point is a complete params file (the base with the point's values set), validated before anything
runs; a problem names the point and the key. A point's name comes from its own values
(``lr=0.001,n_embd=32,seed=1``), so adding points never renames the others.

    python -m pipeline.sweep list SWEEP.yaml            # the points and their data folders, validated
    python -m pipeline.sweep report SWEEP.yaml          # OUT_DIR/sweeps/<name>/report.html and summary.csv
    python -m pipeline.sweep queue SWEEP.yaml [--dry-run]   # each point as a named DVC experiment (halving: the
                                                        # next rung; run it again once the queue has run)

    snakemake -j 4 --config sweep=SWEEP.yaml            # run every point (see the Snakefile)

- ``spec``: a sweep file read and expanded into its points, and each point's params file.
- ``halving``: successive halving: the rungs' params, ranking and promotion.
- ``stems``: warmup-stable-decay branches: points that differ in budget or cooldown alone share a stable phase.
- ``dvc``: the points as named DVC experiments (``queue``).
- ``report``: the report page (``report.html``) and ``summary.csv`` of a sweep's results.
- ``fits``: the report's conclusions as numbers: power-law fits with bootstrap intervals, the best setting against
  the runner-up paired by seed.
- ``sweep.smk``: the Snakemake rules of a sweep, included by the Snakefile.
- ``__main__``: the command line above.
"""
