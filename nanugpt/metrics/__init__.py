"""Metrics of a run and where they go.

- ``train_metrics``: per-step losses kept on the device until flushed, the log interval's figures.
- ``sinks``: console, CSV, dvclive, TensorBoard and W&B behind one interface.
"""
