"""Evaluating a model.

- ``evaluate``: loss and the loss's metrics on fixed batches, during training and of a checkpoint.
- ``hellaswag``: HellaSwag accuracy, scored by the endings' loss.
"""
