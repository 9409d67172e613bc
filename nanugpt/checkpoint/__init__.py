"""Checkpoints on disk: tensors and plain values, written atomically, loaded with ``weights_only=True``.

- ``store``: ``.pt`` step files, ``last.pt`` / ``best.pt``, the newest loadable one, a trained model back.
- ``sharded``: FSDP runs' step folders, written by every rank through DCP and resharded on load.
- ``background``: writes that go on while training does (``training.async_checkpoint``).
"""
