"""Kernels, apart from the models that use them, each chosen by device and dtype.

- ``cross_entropy``: the entry points the losses call, and ``choose_kernel``, the one place that picks
  PyTorch's standard kernels or the CPU-tuned ones of ``cpu_cross_entropy`` (which never run on CUDA).
- ``cpu_cross_entropy``: the chunked cross-entropy and the linear head fused with it, for CPU float32.
- ``rms_norm``: parameter-free RMSNorm, hand-written backward on CPU, ``F.rms_norm`` elsewhere.
- ``relu_squared``: ``relu(x)^2`` with a one-pass backward.
- ``decode_head``: a decoding step's head logits, ``(W @ h.T).T`` on CPU float32, ``F.linear`` elsewhere.
"""
