"""``python -m pipeline.sweep``: list, report or queue the points of a sweep file (see ``pipeline.sweep``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pipeline.sweep
from pipeline.cli import run_command
from pipeline.sweep import dvc, halving, report
from pipeline.sweep.spec import describe, expand

USAGE = (pipeline.sweep.__doc__ or "").strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sweep command (see the module doc); exit 2 with one line per problem for an invalid sweep."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or len(argv) < 2:
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, file, rest = argv[0], argv[1], argv[2:]

    def body() -> int:
        if command == "rung-result":  # the last step of a halving rung's job (sweep.smk): FOLDER, not a sweep file
            return write_rung_result(file, rest)
        sweep = expand(file)
        if command == "list" and not rest:
            print(describe(sweep))
        elif command == "report" and not rest:
            html, csv = report.write_report(sweep, sweep.folder())
            print(f"wrote {html} and {csv}")
        elif command == "queue" and rest in ([], ["--dry-run"]):
            return dvc.queue(sweep, dry_run=bool(rest))
        else:
            print(USAGE, file=sys.stderr)
            return 2
        return 0

    return run_command(body)


def write_rung_result(folder: str, options: list[str]) -> int:
    """``rung-result FOLDER --exit-code N --metric M``: write the rung's ``rung.json`` (``pipeline.sweep.halving``)."""
    if len(options) != 4 or options[0] != "--exit-code" or options[2] != "--metric" or not options[1].isdigit():
        print("usage: python -m pipeline.sweep rung-result FOLDER --exit-code N --metric METRIC", file=sys.stderr)
        return 2
    result = halving.write_result(Path(folder), exit_code=int(options[1]), metric=options[3])
    print(f"{folder}: {result['status']} at step {result['step']}, {options[3]} {result[options[3]]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
