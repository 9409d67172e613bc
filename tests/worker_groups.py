"""How ``make test`` shares the tests among its pytest-xdist workers (``-n 3 --dist loadfile --no-loadscope-reorder``).

A worker takes a whole test file at a time, so a module fixture (a shared tokenized corpus, a trained run,
the README's workspace) is built once and a file's tests run in their order. The files that submit jobs to
the Slurm cluster go to one worker as one unit, one after another: the cluster's two nodes hold one test's
jobs at a time, and a job left waiting for a node would run into that test's deadline. That unit is the
longest and goes first, so the other workers work through the rest beside it, end-to-end files (collected
before the unit tests) before the many short unit files that even out the end.

Loaded by ``addopts`` (``-p worker_groups``); outside an xdist worker and without ``--dist loadfile`` it changes
nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

SLURM_FILES = frozenset(
    {
        "tests/e2e/test_slurm_e2e.py",
        "tests/e2e/test_multinode_e2e.py",
        "tests/e2e/test_sweep_slurm_e2e.py",
        "tests/unit/pipeline/test_submit.py",
    }
)

SLURM_UNIT = "the Slurm cluster's tests"


def work_unit(nodeid: str) -> str:
    """The unit a test is scheduled with: its file, or one unit for every file that uses the Slurm cluster."""
    path = nodeid.split("::", 1)[0]
    return SLURM_UNIT if path in SLURM_FILES else path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker's collection (the order the scheduler hands units out in), the Slurm unit first."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: work_unit(item.nodeid) != SLURM_UNIT)  # a stable sort: the rest keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, with the Slurm files as one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return FileScheduling(config, log)
