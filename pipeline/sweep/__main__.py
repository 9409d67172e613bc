"""``python -m pipeline.sweep``: list, report or queue the points of a sweep file (see ``pipeline.sweep``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pipeline.sweep
from pipeline.cli import run_command
from pipeline.sweep import dvc, report
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


if __name__ == "__main__":
    sys.exit(main())
