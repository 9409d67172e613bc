"""Pipeline stages: tokenize, train, evaluate, generate. Each is ``run(params, ...)`` plus ``main(argv)``."""

from pipeline.interrupt import install_when_run

install_when_run()  # before a stage's own imports: Ctrl-C while torch loads is one line too
