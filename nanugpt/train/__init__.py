"""The train loop and the components it is a short loop over.

- ``trainer``: the loop, one code path for one process, torchrun and many nodes.
- ``build``: the parts of a run, built from params before its first step.
- ``step``: one optimizer step (micro-batches, clipping, the update).
- ``validator``: when to evaluate during training, and the best val loss so far.
- ``checkpointer``: when a run saves, and where it resumes from.
- ``previous_run``: an earlier run's outputs, kept until the new run has proven itself.
- ``run_info``: ``run_info.json``, what is needed to reproduce a run.
- ``environment``: the environment's fingerprint, compared when a run resumes (``training.resume_env``).
- ``spikes``: loss spikes rolled back, skipped or stopped at (``training.spike``).
- ``memory_check``: refusing a model that cannot fit in memory before it is allocated.
- ``profiler``: a ``torch.profiler`` window over a few optimizer steps (``training.profile``).
"""
