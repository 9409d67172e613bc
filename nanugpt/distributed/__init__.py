"""Processes and devices: one code path for one process, torchrun, and many nodes.

- ``process_group``: process-group set-up (gloo on CPU, NCCL on GPU) and the run's ``DistInfo``.
- ``device``: device choice, autocast, and the device's peak FLOP/s for MFU.
- ``fsdp``: FSDP2 sharding and activation checkpointing per transformer block.
- ``signals``: the signals that ask a run to stop (preemption, requeue, Ctrl-C), without torch.
"""
