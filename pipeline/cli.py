"""The command line shared by every stage: ``python -m stages.<name> [PARAMS_FILE] [--section.key value ...]``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from nanugpt.errors import UserError
from nanugpt.params import Params, ParamsError, load_params


def parse_argv(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Split ``[PARAMS_FILE] [--section.key value ...]`` into the file and the overrides."""
    argv = list(argv)
    if argv and not argv[0].startswith("--"):
        return argv[0], argv[1:]
    return "params.yaml", argv


def stage_main(argv: Sequence[str] | None, doc: str, run: Callable[[Params], object]) -> int:
    """Load and validate params, then call ``run``; user errors become one message and exit code 1 or 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(doc.strip())
        return 0
    path, overrides = parse_argv(argv)
    try:
        params = load_params(path, overrides)
    except ParamsError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    try:
        run(params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
