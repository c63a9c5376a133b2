"""Item 2: header-read deadline, idle keep-alive timeout, connection cap (real `serve`)."""

from __future__ import annotations

import socket
import time

import pytest

from .conftest import alive, start_serve


def _port(srv) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the connection (recv returns b"" or resets), or None."""
    sock.settimeout(0.2)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0
    return None


@pytest.mark.slow
def test_silent_connection_is_closed_after_the_header_deadline(sec_server):
    s = socket.create_connection(("127.0.0.1", _port(sec_server)))
    took = _closed_within(s, 10)
    s.close()
    assert took is not None and took < 5, took  # deadline 1.5 s on this server
    assert alive(sec_server)


@pytest.mark.slow
def test_trickled_headers_are_cut_off(sec_server):
    s = socket.create_connection(("127.0.0.1", _port(sec_server)))
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    t0 = time.monotonic()
    closed = False
    for i in range(40):  # one header line every 0.25 s: never a complete head
        try:
            s.sendall(f"X-Slow-{i}: a\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if _closed_within(s, 0.25) is not None:
            closed = True
            break
    s.close()
    assert closed and time.monotonic() - t0 < 6
    assert alive(sec_server)


@pytest.mark.slow
def test_idle_keep_alive_connection_is_closed_and_honest_requests_still_work(sec_server):
    s = socket.create_connection(("127.0.0.1", _port(sec_server)))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    assert b"200 OK" in s.recv(4096)
    took = _closed_within(s, 10)  # keep-alive 2 s, then closed
    s.close()
    assert took is not None and took < 5, took


@pytest.mark.slow
def test_connection_cap(tmp_path):
    srv = start_serve(tmp_path / "cap", args=["--max-connections", "8", "--header-timeout", "30"])
    try:
        socks = [socket.create_connection(("127.0.0.1", _port(srv))) for _ in range(20)]
        time.sleep(0.5)
        closed = sum(1 for s in socks if _closed_within(s, 0.3) is not None)
        for s in socks:
            s.close()
        assert closed >= 10, closed  # beyond the cap, new connections are closed at once
        assert alive(srv)
    finally:
        srv.stop()
