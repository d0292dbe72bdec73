"""Shared machinery for the local services: free ports, child processes, readiness waits."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


class ServiceError(Exception):
    """A local service could not start or answer; the message says what to do."""


@dataclass
class ServiceInfo:
    """What a running service looks like from outside: its process and addresses."""

    name: str
    pid: int
    addresses: dict[str, str] = field(default_factory=dict)
    data_dir: str = ""
    log_file: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (for the CLI's state file)."""
        return {
            "name": self.name,
            "pid": self.pid,
            "addresses": self.addresses,
            "data_dir": self.data_dir,
            "log_file": self.log_file,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServiceInfo:
        """Inverse of ``to_json``."""
        return cls(
            name=raw["name"],
            pid=int(raw["pid"]),
            addresses=dict(raw.get("addresses", {})),
            data_dir=raw.get("data_dir", ""),
            log_file=raw.get("log_file", ""),
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Fail with a one-line message when a configured port is already taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Why SO_REUSEADDR: a restarted server's old port sits in TIME_WAIT after its
        # clients disconnect; servers bind with SO_REUSEADDR, so the probe must too,
        # or a restart would move to a new port and strand every client.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ServiceError(
                f"port {port} on {host} is already in use ({setting}); "
                f"stop what uses it or set {setting}=0 to pick a free port"
            ) from None


def pick_port(host: str, configured: int, setting: str) -> int:
    """The configured port (checked free) or, when it is 0, a free one."""
    if configured:
        ensure_port_free(host, configured, setting)
        return configured
    return free_port(host)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Why: if the supervising process is SIGKILLed, its foreground children must not
    # outlive it (no orphaned servers holding ports). Runs in the child before exec.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
    detached: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child process with its output in ``log_file``.

    ``detached`` children (``sagaflow services up``) survive this process; others
    get a parent-death signal so nothing is left behind when the parent dies.
    Each child runs in its own session so a terminal Ctrl-C reaches only us, and
    we stop the children in order.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            user=user,
            # Why: with only the uid switched the child keeps root's groups, and a
            # root-group folder without group bits (pytest's 0700 tmp) would be refused.
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
            start_new_session=True,
            preexec_fn=None if detached else _die_with_parent,
        )
    except FileNotFoundError as exc:
        raise ServiceError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    finally:
        log.close()


def process_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_process(pid: int, *, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
    """Stop a process by id: ``sig``, wait, then SIGKILL the whole process tree."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        children = []
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)
    _gone, alive = psutil.wait_procs([proc], timeout=timeout_s)
    for straggler in [*alive, *children]:
        with contextlib.suppress(psutil.Error):
            if straggler.is_running():
                straggler.kill()
    psutil.wait_procs(children, timeout=5)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_file: Path | None = None,
    interval_s: float = 0.2,
) -> None:
    """Poll ``check`` until it returns True; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{what} exited with code {proc.returncode} while starting"
                + (f"; last log lines:\n{tail(log_file)}" if log_file else "")
            )
        try:
            if check():
                return
        except Exception as exc:  # readiness probes fail until the service is up
            last_error = exc
        time.sleep(interval_s)
    raise ServiceError(
        f"{what} was not ready after {timeout_s:.0f}s"
        + (f" (last error: {last_error})" if last_error else "")
        + (f"; last log lines:\n{tail(log_file)}" if log_file else "")
    )


def tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    if path is None or not path.exists():
        return ""
    content = path.read_text(errors="replace").splitlines()
    return "\n".join(content[-lines:])


def make_traversable(path: Path) -> None:
    """Let another system user reach ``path`` (o+x on every parent folder)."""
    for parent in [path, *path.parents]:
        with contextlib.suppress(OSError):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
