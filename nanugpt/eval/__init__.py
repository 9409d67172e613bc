"""Evaluating a model.

- ``evaluate``: loss and the loss's metrics on fixed batches, during training and of a checkpoint.
- ``hellaswag``: HellaSwag accuracy, scored by the endings' loss.
- ``task_curve``: the benchmarks of ``eval.tasks`` during training, on a fixed subset, as a curve.
"""
