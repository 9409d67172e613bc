"""The environment fingerprint's parts that come from outside Python: the lock file ``make setup`` installed (its
stamp), the variables that choose the CPU kernels; and the lock files themselves, against ``pyproject.toml``."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from helpers import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nanugpt.train.environment import LOCK_STAMP, fingerprint, installed_lock, kernel_variables

LOCKS = {"requirements-cpu.txt": "cpu", "requirements-cuda.txt": "cuda"}  # each lock file and its torch extra


def test_the_lock_is_read_from_the_stamp_make_setup_writes(tmp_path: Path) -> None:
    lock = REPO / "requirements-cpu.txt"
    stamp = tmp_path / ".installed"
    with open(stamp, "w") as out:  # the Makefile's recipe: sha256sum $(LOCK) > $@
        subprocess.run(["sha256sum", str(lock)], stdout=out, check=True)
    assert installed_lock(stamp) == hashlib.sha256(lock.read_bytes()).hexdigest()
    stamp.write_text("")  # the stamp of a Makefile before lock files, or of the README test's borrowed venv
    assert installed_lock(stamp) is None
    assert installed_lock(tmp_path / "absent") is None  # a venv made by hand
    assert fingerprint()["lock"] == installed_lock(LOCK_STAMP)


def test_the_variables_that_choose_kernels_are_recorded_when_set() -> None:
    assert kernel_variables({"PATH": "/bin"}) is None
    strict = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "HOME": "/root"}
    assert kernel_variables(strict) == "ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE"


def pins(lock: Path) -> dict[str, str]:
    """``{name: version}`` of a pip-compile lock file."""
    found = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in found}


@pytest.mark.parametrize("lock_name", sorted(LOCKS))
def test_each_lock_pins_what_pyproject_asks_within_its_ranges(lock_name: str) -> None:
    """A dependency added to pyproject.toml without ``make lock`` would be missing from the environment."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [Requirement(text) for text in [*project["dependencies"], *extras["test"], *extras[LOCKS[lock_name]]]]
    pinned = pins(REPO / lock_name)
    wrong = []
    for req in wanted:
        version = pinned.get(canonicalize_name(req.name))
        if (req.marker is None or req.marker.evaluate()) and (
            version is None or not req.specifier.contains(version, prereleases=True)
        ):
            wrong.append(f"{req} (locked: {version})")
    assert not wrong, f"{lock_name} misses or contradicts pyproject.toml, run `make lock`: {', '.join(wrong)}"
    assert pinned["torch"].endswith("+cpu") == (LOCKS[lock_name] == "cpu")  # ==2.13.0 admits 2.13.0+cpu too
