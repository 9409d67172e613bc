"""The environment a run's numbers come from, as a fingerprint: in ``run_info.json``, in every checkpoint, and in
dvclive's params (so ``dvc exp show`` lists it beside each experiment).

A resume under another fingerprint is said in one line naming what differs (``numpy 1.26.4 -> 2.1.0``), or
refused with ``training.resume_env: strict``: eager CPU runs are bitwise reproducible on one machine with one
environment and one thread count; across library builds, CPU models or thread counts they agree to rounding
(docs/reproducibility.md).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from nanugpt.errors import CheckpointError


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def packages_digest() -> str:
    """The sha256 of every installed distribution's ``name==version``, sorted: two environments with the same
    packages at the same versions have the same digest, whatever installed them."""
    pins = sorted(
        {f"{(dist.metadata['Name'] or '').lower()}=={dist.version}" for dist in metadata.distributions()} - {"=="}
    )
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()


# The stamp ``make setup`` writes into the environment it installed: the ``sha256sum`` line of the lock file.
LOCK_STAMP = Path(sys.prefix) / ".installed"

# The environment variables that choose the CPU kernels, and so the last bits of the numbers (general.reproducible).
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def installed_lock(stamp: Path = LOCK_STAMP) -> str | None:
    """The sha256 of the lock file ``make setup`` installed this environment from, read from its stamp. The
    stamp, not the lock file in the checkout: that one may be newer than the environment (a pull before the next
    ``make setup``), or never installed (a venv made by hand). None without a stamp that names a lock."""
    try:
        words = stamp.read_text().split()
    except OSError:
        return None
    return words[0] if words and re.fullmatch(r"[0-9a-f]{64}", words[0]) else None


def kernel_variables(env: Mapping[str, str] = os.environ) -> str | None:
    """``NAME=value`` of each set ``KERNEL_VARIABLES``, space-separated; None where none is set."""
    given = [f"{name}={env[name]}" for name in KERNEL_VARIABLES if env.get(name)]
    return " ".join(given) or None


def fingerprint() -> dict[str, Any]:
    """What shapes the numbers besides params, code and data: python, torch and its build (CUDA, cuDNN, NCCL
    where present), numpy, the CPU model and the instruction set torch's kernels use, the variables that choose
    kernels, the intra-op threads, the lock file the environment was installed from and the digest of every
    installed package."""
    try:
        numpy_version: str | None = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        numpy_version = None
    cuda = torch.version.cuda
    return {
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),  # a TorchVersion, which weights_only loading refuses
        "cuda": str(cuda) if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda and torch.cuda.is_available() else None,
        "numpy": numpy_version,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_variables": kernel_variables(),
        "threads": torch.get_num_threads(),
        "lock": installed_lock(),
        "packages": packages_digest(),
    }


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key old -> new`` for each key whose value differs between two fingerprints (a key one lacks: None)."""
    return [
        f"{key} {saved.get(key)} -> {current.get(key)}"
        for key in sorted(saved.keys() | current.keys())
        if saved.get(key) != current.get(key)
    ]


def check_resume(saved: dict[str, Any] | None, current: dict[str, Any], *, strict: bool) -> str | None:
    """The line to log where a checkpoint's fingerprint ``saved`` differs from this process's; with ``strict`` a
    ``CheckpointError`` instead. None where they agree, or for a checkpoint saved without one."""
    if not saved:
        return None
    changed = differences(saved, current)
    if not changed:
        return None
    what = f"the checkpoint was saved in another environment ({', '.join(changed)})"
    if strict:
        raise CheckpointError(f"{what}; training.resume_env is strict: resume it where it was saved, or set 'warn'")
    return (
        f"warning: {what}: the run continues, and its numbers agree with an uninterrupted run's to rounding, "
        "not bitwise"
    )
