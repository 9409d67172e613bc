"""What tests share that is not a fixture: the repository's paths, a tiny corpus and params, workspaces copied from
the tracked files (a committed DVC workspace among them), commands run with a timeout and DVC's and Snakemake's
reports of them, launched and in-process runs and their losses, and the Slurm check."""

from __future__ import annotations

import csv
import getpass
import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "tests" / "assets"

TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 40

DIGITS_TEXT = "".join(f"{(i * 37) % 1000:03d}+{(i * 11) % 1000:03d}\n" for i in range(1500))  # no letters: a row of
# it is told apart from a row of TINY_TEXT by its content
BYTE_EOT = {"module": "byte", "special_tokens": ["<|endoftext|>"]}  # one vocabulary for any corpus: a mixture's


def mixture_data(letters: Path | str, digits: Path | str, weights: tuple[float, float] = (0.7, 0.3)) -> dict[str, Any]:
    """A ``mixture`` data section of two text corpora, ``letters`` and ``digits`` (the second with a larger val
    share, so the two sources differ by more than their files)."""
    return {
        "module": "mixture",
        "dataset": "mix",
        "sources": [
            {"dataset": "letters", "source": str(letters), "weight": weights[0]},
            {"dataset": "digits", "source": str(digits), "weight": weights[1], "val_fraction": 0.2},
        ],
    }


# What a local run leaves in the checkout (DATA_ROOT / OUT_DIR defaults, DVC's lock): never part of a workspace,
# even when a user has committed them, so an end-to-end test starts from the code alone.
PIPELINE_OUTPUTS = ("data/", "out/", "dvc.lock", "dvc_plots/")
# README commands that other tests run as written (test_readme.py's rules for them match only this text):
# tests/e2e/test_dvc_e2e.py (a repro, experiments and the queue of two), tests/e2e/test_sweep_e2e.py (a sweep and
# its report), tests/e2e/test_sweep_dvc_e2e.py and tests/e2e/test_snakemake_e2e.py (/scratch a temporary folder).
README_REPRO = "dvc repro"
README_EXPERIMENT_LR = "dvc exp run -S optimizer.lr=1e-3"
README_RESTORE_ELSEWHERE = "dvc exp run --pull -S optimizer.lr=1e-3"  # in a clone, after push-runs
README_EXPERIMENT_HELLASWAG = "dvc exp run -S 'eval.tasks=[hellaswag]'"
README_QUEUE_TWO_EXPERIMENTS = "dvc exp run --queue -S 'optimizer.lr=3e-3,6e-4'"
README_RUN_QUEUED_EXPERIMENTS = "dvc exp run --run-all"
README_SWEEP_LOCALLY = "snakemake -j 4 --config sweep=sweeps/lr_width.yaml"
README_SWEEP_REPORT = "python -m pipeline.sweep report sweeps/lr_width.yaml"
README_HALVING_LOCALLY = "snakemake -j 2 --config sweep=sweeps/lr_halving.yaml"
README_SWEEP_ON_DVC_QUEUE = "python -m pipeline.sweep queue sweeps/lr_width.yaml && dvc queue start -j 4"
README_SNAKEMAKE_ELSEWHERE = "snakemake -j 2 --config data_root=/scratch/data out_dir=/scratch/runs/exp1"


def call_main(main: Callable[[list[str]], int], args: list[str]) -> tuple[int, str, str]:
    """A command's ``main(args)`` run in this process, as ``python -m`` runs it: its exit code (that of a
    ``SystemExit`` it raises too: an escaped exception becomes one, after its traceback on stderr), and what it
    printed on stdout and on stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, stdout.getvalue(), stderr.getvalue()


def killed_after(full: Path, step: int, out: Path) -> Path:
    """``out`` as a run killed after its checkpoint at ``step`` left it: that step file of the finished run
    ``full`` as ``last.pt``, and ``full``'s plots (their rows past ``step`` are dropped on resume)."""
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / f"step-{step:07d}.pt", out / "checkpoints" / "last.pt")
    shutil.copytree(full / "plots", out / "plots")
    return out


def launch_env(data_root: Path, out_dir: Path) -> dict[str, str]:
    """The environment of a ``python -m pipeline.launch`` test run: this checkout's code (and ``tests/``, where the
    components that tests plant by import path live: ``planted_data``), the given DATA_ROOT / OUT_DIR, one OpenMP
    thread per rank (the ranks share this machine's cores)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "DATA_ROOT": str(data_root),
        "OUT_DIR": str(out_dir),
        "OMP_NUM_THREADS": "1",
    }


def launch_train(params_file: Path, data_root: Path, out_dir: Path) -> subprocess.CompletedProcess:
    """Run the train stage as users do, ``python -m pipeline.launch params_file`` (torchrun for
    ``launch.nproc_per_node`` > 1), from ``params_file``'s folder; fail with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.launch", str(params_file)],
        cwd=params_file.parent,
        env=launch_env(data_root, out_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def tracked_files() -> list[str]:
    """Tracked files (``git ls-files --cached``) present in the working tree, less the pipeline outputs."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\0")
    return [
        name
        for name in filter(None, listed)
        if (REPO / name).is_file() and not name.startswith(PIPELINE_OUTPUTS)  # a tracked file deleted here is skipped
    ]


def copy_worktree(dest: Path) -> Path:
    """Copy the repository's tracked files, as they are in the working tree (edits included), into ``dest``.

    Untracked files never travel, so the ``data/``, ``out/`` and ``dvc.lock`` that ``make run`` leaves in the
    checkout cannot leak into a test's workspace; a new source file reaches the end-to-end tests once it is
    ``git add``-ed.
    """
    for name in tracked_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest


def dvc_env(tmp: Path) -> dict[str, str]:
    """The environment of a workspace's commands: this venv first on PATH, no analytics, DVC and git config of
    this test only (no user or system settings; no update check, which would start a dvc process that asks the
    network at each command of a new workspace), a git author, and the default DATA_ROOT / OUT_DIR."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUT_DIR")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"),
        DVC_GLOBAL_CONFIG_DIR=str(tmp / "dvc-global-config"),
        DVC_SYSTEM_CONFIG_DIR=str(tmp / "dvc-system-config"),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="nanugpt tests",
        GIT_AUTHOR_EMAIL="tests@nanugpt.invalid",
        GIT_COMMITTER_NAME="nanugpt tests",
        GIT_COMMITTER_EMAIL="tests@nanugpt.invalid",
    )
    global_config = tmp / "dvc-global-config"
    global_config.mkdir(parents=True, exist_ok=True)
    (global_config / "config").write_text("[core]\n    check_update = false\n")
    return env


def require_slurm() -> None:
    """Skip the calling test unless a Slurm cluster with an idle node answers here (CI starts one)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("no Slurm client here (sinfo/sbatch not on PATH); CI starts a cluster with .ci/slurm-up")
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], check=False, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("sinfo did not answer in 30 s: no Slurm controller running")
    if states.returncode != 0 or "idle" not in states.stdout.split():
        pytest.skip(f"no idle Slurm node (sinfo: {(states.stdout + states.stderr).strip() or 'nothing'})")


SSHD = "/usr/sbin/sshd"  # Debian's openssh-server; sshd must be started by its absolute path


@dataclass(frozen=True)
class SshServer:
    """A test's running sshd: where it listens, and who logs in with which key."""

    host: str
    port: int
    user: str
    keyfile: Path

    def url(self, path: Path) -> str:
        """The ``ssh://`` URL of ``path`` on this server (a node of this machine: the same file system)."""
        return f"ssh://{self.user}@{self.host}:{self.port}{path}"


@contextmanager
def sshd_on_node(folder: Path, node: str = "n1") -> Iterator[SshServer]:
    """A real OpenSSH server in the network namespace of node ``node`` of the namespace cluster (.ci/slurm-up),
    for this test alone: its config, host key and authorized key in ``folder``, public-key login of this user only,
    a port of its own; stopped by its PID on exit. Before it is handed out, OpenSSH's client logs in with the key
    and checks the host key against the known_hosts file written here. Skips without root, the cluster or sshd."""
    netns = Path(f"/var/run/netns/nanugpt-{node}")
    if os.geteuid() != 0:
        pytest.skip(f"the SSH server runs in node {node}'s network namespace: root needed (CI runs as root)")
    if not netns.exists():
        pytest.skip(f"no namespace cluster ({netns} is missing): start one with `sudo bash .ci/slurm-up 2` (CI does)")
    if not Path(SSHD).is_file():
        pytest.skip(f"no {SSHD}: install Debian's openssh-server (.ci/slurm-up does)")
    for name in ("host_key", "client_key"):
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)]
        subprocess.run(keygen, check=True, capture_output=True, timeout=60)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    user, port = getpass.getuser(), 20000 + os.getpid() % 10000  # test processes side by side: a port each
    # StrictModes off: the files are under /tmp, which is world-writable, and sshd would refuse them
    (folder / "sshd_config").write_text(
        f"ListenAddress {socket.gethostbyname(node)}:{port}\n"
        f"HostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        f"AllowUsers {user}\n"
        "AuthenticationMethods publickey\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PidFile none\n"
        "Subsystem sftp internal-sftp\n"
    )
    # sshd's privilege separation directory, which the package's init script would make (slurm-up's /run/munge
    # is left in place the same way)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = folder / "sshd.log"
    with open(log, "w") as log_file:  # nsenter execs sshd, which -D keeps in the foreground: the PID is sshd's
        sshd = subprocess.Popen(
            ["nsenter", f"--net={netns}", SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "Server listening" not in log.read_text():
            if sshd.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start in node {node}:\n{log.read_text()}")
            time.sleep(0.1)
        key_type, key = (folder / "host_key.pub").read_text().split()[:2]
        (folder / "known_hosts").write_text(f"[{node}]:{port} {key_type} {key}\n")
        server = SshServer(node, port, user, folder / "client_key")
        checks = [
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=yes",
            f"UserKnownHostsFile={folder}/known_hosts",
        ]
        login = ["ssh", "-F", "/dev/null", "-p", str(port), "-i", str(server.keyfile)]
        login += [arg for check in checks for arg in ("-o", check)] + [f"{user}@{node}", "true"]
        checked = subprocess.run(login, capture_output=True, text=True, timeout=60, check=False)
        if checked.returncode:
            pytest.fail(f"ssh to {node}:{port} failed: {checked.stderr.strip()}\n{log.read_text()}")
        yield server
    finally:
        sshd.terminate()
        try:
            sshd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sshd.kill()
            sshd.wait()


def lock_folder(folder: Path) -> None:
    """Make ``folder`` unwritable, for root too: mode 555, and as root (which ignores modes; CI runs as root) the
    immutable attribute, ``chattr +i``. Skips the test where the file system has no such attribute."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        locked = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True, check=False)
        if locked.returncode:
            pytest.skip(f"root writes into read-only folders and chattr +i failed here: {locked.stderr.strip()}")


def unlock_folder(folder: Path) -> None:
    """Undo ``lock_folder``."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
    folder.chmod(0o755)


def tiny_params(source: Path | str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A complete params dict for a tiny char model on ``source``; ``sections`` update it section-wise."""
    params: dict[str, Any] = {
        "general": {"seed": 7, "device_type": "cpu", "threads": 1},  # the suite's processes share 2 cores
        "data": {"module": "tokenized", "dataset": "tiny", "source": str(source), "val_fraction": 0.1},
        "tokenizer": {"module": "char"},
        "model": {"module": "nanogpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16},
        "training": {
            "max_steps": 20,
            "device_batch_size": 4,
            "global_batch_size": 8,
            "log_every": 5,
            "checkpoint_every": 10,
            "keep_last": 5,
        },
        "optimizer": {"module": "adamw_nanogpt", "lr": 3e-3},
        "scheduler": {"module": "cosine", "warmup_steps": 2},
        "eval": {"eval_every": 10, "eval_iters": 2},
        "generate": {"prompt": "First", "num_samples": 2, "max_new_tokens": 30},
    }
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    return params


def write_params(path: Path, params: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


TIMEOUT_S = 300


def run(args: list[str], cwd: Path, env: dict[str, str], expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; fail the test with its output when its exit status is not what was expected."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if (result.returncode == 0) != expect_ok:
        pytest.fail(f"{' '.join(args)} exited with {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def output(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr of a command together."""
    return result.stdout + result.stderr


def ran_stages(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The stages DVC ran, in order, from its ``Running stage 'name':`` lines."""
    return re.findall(r"Running stage '(\w+)'", output(result))


def skipped_stages(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The stages DVC skipped as unchanged."""
    return re.findall(r"Stage '(\w+)' didn't change, skipping", output(result))


def make_workspace(tmp: Path, params: dict[str, Any], env: dict[str, str]) -> Path:
    """A git repository at ``tmp/ws`` holding the repo's files, ``corpus.txt`` and ``params.yaml``, committed.

    ``params`` is written as a preset and expanded by ``python -m pipeline.params use``,
    because DVC needs every key a stage lists to be literally in ``params.yaml``.
    """
    ws = tmp / "ws"
    copy_worktree(ws)
    (ws / "corpus.txt").write_text(TINY_TEXT, encoding="utf-8")
    preset = write_params(tmp / "tiny.yaml", params)
    run([sys.executable, "-m", "pipeline.params", "use", str(preset)], ws, env)
    run(["git", "init", "-q"], ws, env)
    run(["git", "config", "user.name", "nanugpt tests"], ws, env)
    run(["git", "config", "user.email", "tests@nanugpt.invalid"], ws, env)
    if not (ws / ".dvc").is_dir():
        run(["dvc", "init", "-q"], ws, env)
    run(["git", "add", "-A"], ws, env)
    run(["git", "commit", "-q", "-m", "tiny workspace"], ws, env)
    return ws


def job_reasons(text: str) -> dict[str, str]:
    """``{rule: reason}`` for every job snakemake started, from its ``localrule NAME:`` / ``reason:`` lines."""
    reasons: dict[str, str] = {}
    rule = None
    for line in text.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):$", line.strip()):
            rule = match.group(1)
        elif rule and line.strip().startswith("reason:"):
            reasons[rule] = line.strip().removeprefix("reason:").strip()
            rule = None
    reasons.pop("all", None)
    return reasons


TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16}


# (model, optimizer) pairs of the acceptance: nanoGPT with AdamW, the modern GPT with Muon, a Llama
SETUPS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "nanogpt": ({"module": "nanogpt", **TINY}, {"module": "adamw_nanogpt", "lr": 3e-3}),
    "nanogpt_modern+muon": ({"module": "nanogpt_modern", **TINY}, {"module": "muon", "lr": 0.02}),
    "tinyllama+adamw": ({"module": "tinyllama", **TINY}, {"module": "adamw", "lr": 3e-3}),
}


def run_params(corpus: Path, setup: str, **training: Any) -> dict[str, Any]:
    """Tiny params of ``setup``: 8 steps of 8 rows, 2 micro-steps per rank at 2 ranks, a val pass at the end."""
    model, optimizer = SETUPS[setup]
    return tiny_params(
        corpus,
        model=model,
        optimizer=optimizer,
        training={"max_steps": 8, "device_batch_size": 2, "global_batch_size": 8, "checkpoint_every": 0, **training},
        eval={"eval_every": 0, "eval_iters": 2},
    )


def losses(out_dir: Path) -> list[float]:
    """The per-step train losses a run wrote."""
    with open(out_dir / "plots" / "train.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


def launch(tmp_path: Path, params: dict[str, Any], out: str, nproc: int) -> list[float]:
    """Run the train stage under ``python -m pipeline.launch`` with ``nproc`` torchrun processes; its losses."""
    params_file = write_params(tmp_path / f"{out}.yaml", {**params, "launch": {"nproc_per_node": nproc}})
    result = launch_train(params_file, tmp_path / "data", tmp_path / out)
    assert f"on {nproc} x cpu" in result.stdout
    return losses(tmp_path / out)


def one_process(tmp_path: Path, params: dict[str, Any], out: str) -> list[float]:
    """Tokenize (once) and run the train stage in this process; its losses."""
    from pipeline.schema import load  # torch: only where a run is
    from stages import tokenize, train

    loaded = load(write_params(tmp_path / f"{out}.yaml", params))
    tokenize.run(loaded, data_root=tmp_path / "data")
    train.run(loaded, data_root=tmp_path / "data", out_dir=tmp_path / out)
    return losses(tmp_path / out)


def killed_at_random(work: Callable[[], object], *, within_s: float, rng: random.Random) -> bool:
    """Run ``work`` in a forked child of this process (its imports already done, so a trial costs no start-up)
    and SIGKILL it at a moment drawn uniformly within ``within_s`` seconds; True if the kill came before ``work``
    finished. The families of issue 30 kill a write this way at 20 or more moments each."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, no atexit handlers, whatever happens
        try:
            work()
        finally:
            os._exit(0)
    time.sleep(rng.uniform(0, within_s))
    os.kill(pid, signal.SIGKILL)  # a child that has ended is a zombie until reaped: the kill is then a no-op
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def time_in_child(work: Callable[[], object]) -> float:
    """Seconds ``work`` takes in a forked child, as ``killed_at_random`` runs it: the window to kill it in."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - start
