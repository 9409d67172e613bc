"""Benchmarks, each a script run from the repository root as ``python -m bench.<name>`` (``--help``: its manual).

- ``train_throughput``: train-step tokens/s of our train loop against a minimal plain-PyTorch loop, as a ratio.
- ``eval_ratio``: evaluation throughput over train-step throughput, same model and shape.
- ``sink_overhead``: train-step tokens/s with every metric sink on over every sink off; ``--row-costs``: per row.
- ``scaling``: tokens/s and CPU MFU of our train loop across model sizes, contexts, eager and compiled.
- ``step_profile``: where a train step's time goes (torch profiler), for the two recipes of ``quality``.
- ``profiler_overhead``: a train step with ``training.profile`` off against no profiler, and in a window.
- ``checkpoint_stall``: the training stall of a blocking checkpoint save against an async one, 1 process and FSDP.
- ``packing_attention``: a train step's forward + backward with attention masked at document boundaries against
  the unmasked causal one (``data.packing: documents``), and the masks that were tried.
- ``quality``: val loss at nanoGPT's CPU budget, our reference recipe and our modern recipe side by side.
- ``speedrun``: time to val loss 1.88, the ``tinyshakespeare_speedrun`` preset against nanoGPT's settings.
- ``generation``: our generate stage's sampling loop against ``transformers``' ``generate()`` on our export.
- ``fsdp_memory``: per-rank memory and step time of ``ddp`` against ``fsdp`` at 2 and 4 ranks (torchrun, gloo).
- ``loader``: one ``BatchSource.micro_batch`` against one train step, page cache warm and cold.
- ``tokenize_throughput``: our tokenizer pipeline against a bare ``encode_ordinary`` loop, and its peak memory.
- ``tokenize_alternatives``: our tokenize stage against a ``datasets`` map and tiktoken's batch encoding.
- ``pipeline_overhead``: no-op ``dvc repro`` / ``snakemake`` of our pipeline against a trivial ``cp`` pipeline.
- ``gpu_check``: GPT-2 124M tokens/s and MFU on one NVIDIA GPU, peak memory and the loss's kernel
  (run through ``bash bench/gpu_check.sh``; ``--dry-run`` on CPU).
- ``stats``: not a benchmark; the paired bootstrap interval of a pooled ratio the benchmarks share.
"""
