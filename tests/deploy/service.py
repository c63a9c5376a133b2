"""The real service for tests/deploy: `rlhf-ledger serve` (the command the Kubernetes manifests
run: preflight checks, then uvicorn) in a subprocess on a free loopback port.

It waits for /healthz, not /readyz: these tests start it on databases that must make it report
not ready (a restored or failed-over database the fork guard refuses)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.api.helpers import wait_ready

ROOT = Path(__file__).resolve().parents[2]
# Variables of the caller's environment that would point the service elsewhere.
_CLEARED = ("DATABASE_URL", "DATABASE_READ_URL", "DATABASE_URL_FILE", "DATABASE_READ_URL_FILE", "RLHF_CHAIN_RPC",
            "RLHF_ANCHOR_CONTRACT", "RLHF_PUBLISHED_DIR")


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

    def kill(self) -> None:
        """SIGKILL, as when a pod dies with its node (no shutdown hooks run)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_alive(self) -> Service:
        wait_ready(self.proc, self.url, self.log_path, "rlhf-ledger serve", probe="/healthz")
        return self


def start(data_dir: Path, database_url: str | None, env: dict[str, str] | None = None,
          checkpoint_interval: float = 0.5) -> Service:
    return launch(data_dir, database_url, env, checkpoint_interval).wait_alive()


def launch(data_dir: Path, database_url: str | None, env: dict[str, str] | None = None,
           checkpoint_interval: float = 0.5) -> Service:
    """Start the process without waiting (start several side by side, then wait_alive each)."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    # Rate limits off: the drills read as fast as they can from one address (limits: tests/api).
    full.update(RLHF_LEDGER_HOME=str(data_dir), RLHF_API_CHECKPOINT_INTERVAL=str(checkpoint_interval), RLHF_API_RATE="0",
                PYTHONPATH=str(ROOT))
    if database_url:
        full["DATABASE_URL"] = database_url
    full.update(env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"service-{port}.log"
    cmd = [sys.executable, "-m", "rlhf_ledger.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=full, stdout=out, stderr=subprocess.STDOUT)
    return Service(f"http://127.0.0.1:{port}", proc, log_path)
