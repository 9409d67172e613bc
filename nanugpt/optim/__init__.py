"""What a step minimises and how: optimizers, lr schedules, gradient scalers and losses.

- ``adamw``: ``adamw_nanogpt`` (decay on matrices only) and ``adamw``.
- ``muon``: momentum SGD with orthogonalised updates for hidden matrices, AdamW for the rest.
- ``schedulers``: ``cosine``, ``linear``, ``constant`` (warmup-stable-decay) and ``lr_range_test``.
- ``scalers``: ``amp`` (torch's GradScaler for float16) and ``keller``.
- ``losses``: ``autoregressive`` cross-entropy and the algorithmic tasks' ``grokking`` / ``arithmetic``.
"""
