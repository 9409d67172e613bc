"""Pipeline stages: tokenize, train, evaluate, generate. Each is ``run(params, ...)`` plus ``main(argv)``."""
