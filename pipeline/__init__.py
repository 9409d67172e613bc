"""What the orchestrators share: artifact paths, the stage table, the train launcher, params tools, ``storage``
(the cluster's shared DVC cache, and Snakemake runs into DVC)."""

from pipeline.interrupt import install_when_run

install_when_run()  # before a command's own imports: Ctrl-C while torch loads is one line too
