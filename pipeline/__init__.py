"""What the orchestrators share: artifact paths, the stage table, the train launcher, ``publish`` (the finished run's
checkpoints into ``OUT_DIR/model``), params tools, ``storage`` (the cluster's shared DVC cache, Snakemake runs into
DVC, the run-cache to a remote)."""

from pipeline.interrupt import install_when_run

install_when_run()  # before a command's own imports: Ctrl-C while torch loads is one line too
