"""Throw-away PostgreSQL clusters (Debian's pg_createcluster / pg_basebackup), on free loopback
ports, for the replica and failover tests. The machine's main cluster (127.0.0.1:5432) is never
touched: every cluster here has its own name, port and data directory and is dropped after.

Start, stop and promote call the cluster's own `pg_ctl -w` (with Debian's config_file and log
file, as pg_ctlcluster does): pg_ctlcluster polls the socket every 0.5 s and then probes it,
which costs about 2 s per start; `pg_ctl -w` returns as soon as the server accepts connections."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import sqlalchemy as sa


def _version() -> str:
    return sorted(os.listdir("/etc/postgresql"), key=lambda v: int(v))[-1]


def available() -> str | None:
    """None if clusters can be made here, else why not."""
    if os.geteuid() != 0:
        return "creating PostgreSQL clusters needs root (pg_createcluster)"
    for tool in ("pg_createcluster", "pg_dropcluster", "pg_basebackup"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not _pg_ctl().exists():
        return f"{_pg_ctl()} is not installed"
    return None


def _pg_ctl() -> Path:
    return Path(f"/usr/lib/postgresql/{_version()}/bin/pg_ctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*cmd: str, user: str | None = None, timeout: float = 60) -> str:
    if user:
        cmd = ("runuser", "-u", user, "--", *cmd)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


class Cluster:
    def __init__(self, name: str, port: int):
        self.version = _version()
        self.name, self.port = name, port
        self.data = Path(f"/var/lib/postgresql/{self.version}/{name}")
        self.conf = Path(f"/etc/postgresql/{self.version}/{name}")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    # fsync stays on (the drills are about what a commit means); `recovery_init_sync_method =
    # syncfs` spares a standby's start-up the file-by-file fsync of its whole data directory.
    BASE = {"listen_addresses": "'127.0.0.1'", "wal_level": "replica", "max_wal_senders": "5", "fsync": "on",
            "recovery_init_sync_method": "syncfs"}

    @classmethod
    def create(cls, prefix: str, settings: dict[str, str] | None = None) -> Cluster:
        c = cls(f"{prefix}_{uuid.uuid4().hex[:8]}", free_port())
        _run("pg_createcluster", c.version, c.name, "-p", str(c.port), "--", "--auth=trust", "--no-sync")
        c.configure({**cls.BASE, **(settings or {})})
        with open(c.conf / "pg_hba.conf", "a") as fh:
            fh.write("host replication all 127.0.0.1/32 trust\n")
        return c

    def configure(self, settings: dict[str, str]) -> None:
        with open(self.conf / "conf.d" / "rlhf-test.conf", "a") as fh:
            for k, v in settings.items():
                fh.write(f"{k} = {v}\n")

    def _pg_ctl(self, *args: str) -> None:
        _run(str(_pg_ctl()), *args, "-w", "-s", "-D", str(self.data), user="postgres")

    def start(self) -> None:
        self._pg_ctl("start", "-o", f"-c config_file={self.conf / 'postgresql.conf'}",
                     "-l", f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """mode "immediate" is a hard stop: no shutdown checkpoint, as after a crash."""
        self._pg_ctl("stop", "-m", mode)

    def promote(self) -> None:
        self._pg_ctl("promote")  # -w: returns once the server accepts writes
        deadline = time.monotonic() + 30
        while self.scalar("SELECT pg_is_in_recovery()"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not leave recovery")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.scalar("SELECT 1")
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def scalar(self, sql: str, db: str = "postgres"):
        eng = sa.create_engine(self.url(db), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with eng.connect() as c:
                res = c.execute(sa.text(sql))
                return res.scalar() if res.returns_rows else None
        finally:
            eng.dispose()

    def replica(self, prefix: str, *, application_name: str) -> Cluster:
        """A streaming replica of this cluster, started: pg_basebackup -R into a new data
        directory, which pg_createcluster then registers as a Debian cluster of its own (given
        an existing data directory it moves the configuration files found there to
        /etc/postgresql and sets the port, paths and name; no initdb)."""
        r = Cluster(f"{prefix}_{uuid.uuid4().hex[:8]}", free_port())
        _run("install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", str(r.data))
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres application_name={application_name}"
        # --no-sync: a throw-away copy; the standby's own WAL flushes are what the drills rely on.
        _run("pg_basebackup", "-d", conninfo, "-D", str(r.data), "-R", "-X", "stream", "-c", "fast", "--no-sync",
             user="postgres", timeout=120)
        for f in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):  # carries the replication hba line
            shutil.copy(self.conf / f, r.data / f)
            shutil.chown(r.data / f, "postgres", "postgres")
        _run("pg_createcluster", r.version, r.name, "-p", str(r.port))
        r.configure({**self.BASE, "hot_standby": "on", "hot_standby_feedback": "on"})
        r.start()
        return r

    def drop(self) -> None:
        # Immediate stop first: a fast stop would write a shutdown checkpoint nobody needs.
        subprocess.run(["runuser", "-u", "postgres", "--", str(_pg_ctl()), "stop", "-m", "immediate", "-s", "-D",
                        str(self.data)], capture_output=True, timeout=60)
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True, timeout=60)
        # pg_dropcluster leaves conf.d behind when it holds a file of ours.
        shutil.rmtree(self.conf, ignore_errors=True)
