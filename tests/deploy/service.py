"""The real service (uvicorn in a subprocess on a free loopback port) for tests/deploy. Unlike
tests/api's fixture it waits for /healthz, not /readyz: these tests start it on databases that
must make it report not ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start(data_dir: Path, database_url: str | None, env: dict[str, str] | None = None) -> Service:
    port = free_port()
    full = dict(os.environ)
    for k in ("DATABASE_URL", "DATABASE_READ_URL", "RLHF_CHAIN_RPC", "RLHF_ANCHOR_CONTRACT"):
        full.pop(k, None)
    full.update(RLHF_LEDGER_HOME=str(data_dir), RLHF_API_CHECKPOINT_INTERVAL="0.5", PYTHONPATH=str(ROOT))
    if database_url:
        full["DATABASE_URL"] = database_url
    full.update(env or {})
    log_path = data_dir / f"service-{port}.log"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "info"]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=full, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    svc = Service(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}: {svc.log()[-3000:]}")
        try:
            if httpx.get(svc.url + "/healthz", timeout=2).status_code == 200:
                return svc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    svc.stop()
    raise RuntimeError(f"service did not start: {svc.log()[-3000:]}")
