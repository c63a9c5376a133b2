"""Sustained submission rate over HTTP (loopback) beside the in-process Ledger.append rate.

Batches of 1000 pre-signed events; both paths verify every signature, both commit with the
same durability (SQLite WAL synchronous=FULL by default, PostgreSQL with DATABASE_URL). The
target is HTTP >= 70% of the in-process rate. Run: .venv/bin/python benchmarks/http_submit.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from rlhf_ledger.core.events import make_event, sha256_hex, sign_event  # noqa: E402
from rlhf_ledger.core.jcs import canonicalize  # noqa: E402
from rlhf_ledger.core.keys import Signer  # noqa: E402

PASSPHRASE = "benchmark-passphrase"


def signed_batches(signer: Signer, log_id: str, run_id: str, batches: int, size: int) -> list[list[dict]]:
    out, seq, prev = [], 0, None
    for _ in range(batches):
        batch = []
        for _ in range(size):
            ev = make_event(log_id=log_id, run_id=run_id, type="compute.usage", producer=signer.key_id, seq=seq, prev=prev,
                            body={"device": "cpu", "seconds": seq, "flops": 1e12})
            batch.append(sign_event(ev, signer))
            prev, seq = sha256_hex(canonicalize(ev)), seq + 1
        out.append(batch)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, database_url: str | None, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, RLHF_LEDGER_HOME=str(data_dir), RLHF_LEDGER_PASSPHRASE=PASSPHRASE, RLHF_API_RATE="0",
               RLHF_API_CHECKPOINT_INTERVAL="5", PYTHONPATH=str(ROOT))
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "rlhf_ledger.api.app:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        cwd=str(ROOT), env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    os.environ["RLHF_LEDGER_PASSPHRASE"] = PASSPHRASE
    from rlhf_ledger.api.tokens import create_token
    from rlhf_ledger.store.ledger import Ledger

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="bench-http-"))
    database_url = os.environ.get("DATABASE_URL")
    ledger = Ledger.open(data_dir, database_url)
    log_id = "bench-" + os.urandom(3).hex()
    ledger.init_log(log_id, checkpoint_every_events=10_000)
    signer = Signer.generate()
    ledger.register_producer(log_id, signer.public_key)
    admin, _ = create_token(ledger.tokens, "submitter", log_ids=[log_id], producer_key_ids=[signer.key_id], run_ids=["*"])
    n = args.batches
    print(f"pre-signing {3 * n} x {args.batch_size} events ...", flush=True)
    inproc = signed_batches(signer, log_id, "inproc", n, args.batch_size)
    # Bodies are serialised before the clock starts: the figure is the server's, not the client's
    # JSON encoder competing for the same cores.
    over_http = [[json.dumps({"events": b}).encode() for b in
                  signed_batches(signer, log_id, f"http-{c}", (n + args.clients - 1) // args.clients, args.batch_size)]
                 for c in range(args.clients)]

    executor = ThreadPoolExecutor(2)
    t0 = time.perf_counter()
    for b in inproc:
        ledger.append(b, log_id=log_id, executor=executor)
    in_rate = n * args.batch_size / (time.perf_counter() - t0)
    executor.shutdown()
    ledger.close()

    proc, url = start_server(data_dir, database_url)
    try:
        def client(c: int) -> list[float]:
            lat = []
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=120) as h:
                for b in over_http[c]:
                    s = time.perf_counter()
                    r = h.post(f"/v1/logs/{log_id}/events", content=b, headers={"content-type": "application/json"})
                    if r.status_code != 200:
                        raise SystemExit(f"HTTP {r.status_code}: {r.text[:500]}")
                    lat.append(time.perf_counter() - s)
            return lat

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            lats = [x for part in pool.map(client, range(args.clients)) for x in part]
        total = sum(len(p) for p in over_http) * args.batch_size
        http_rate = total / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    backend = "postgresql" if database_url else "sqlite"
    print(f"backend {backend}, batch {args.batch_size} events, {os.cpu_count()} CPUs")
    print(f"in-process Ledger.append : {in_rate:10.0f} events/s ({n} batches)")
    print(f"HTTP POST /events        : {http_rate:10.0f} events/s ({len(lats)} batches, {args.clients} clients, "
          f"median batch {statistics.median(lats) * 1000:.0f} ms)")
    print(f"ratio HTTP / in-process  : {http_rate / in_rate:10.1%} (target >= 70%)")


if __name__ == "__main__":
    main()
