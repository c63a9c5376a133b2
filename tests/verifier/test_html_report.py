"""The HTML report in headless Chromium, driven over the DevTools protocol: no console errors,
no network requests beyond the file itself, and a screenshot of the page."""

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from factory import build_bundle, run_events

from rlhf_verifier.cli import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _report(tmp_path, **kw) -> Path:
    b = build_bundle(tmp_path / "b.jsonl", events=run_events(30, epsilon_budget=1.0), checkpoint_sizes=[10, 39], **kw)
    out = tmp_path / "report.html"
    assert main(b.args("--rules", "eu-ai-act", "--html", str(out), "--json")) == 1  # privacy budget exceeded
    return out


def test_html_is_self_contained(tmp_path, capsys):
    html = _report(tmp_path).read_text()
    capsys.readouterr()
    assert html.index("COMPLIANCE FAILED") < html.index("Compliance rules") < html.index("Anchor timeline") < html.index("<svg")
    assert "<script" not in html.lower()
    assert not re.search(r"(src|href)\s*=", html, re.I)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|url\(", html, re.I)
    assert html.count("<polyline") >= 3  # reward, KL, loss (+ privacy)
    assert "privacy-budget" in html and "fail" in html  # budget 1.0 is below the replayed spend


def _cdp(ws, msg_id, method, params=None):
    ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_html_in_headless_chromium(tmp_path, capsys):
    websockets = pytest.importorskip("websockets.sync.client")
    page = _report(tmp_path)
    rep = json.loads(capsys.readouterr().out)
    profile = tmp_path / "profile"
    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--disable-component-update", "--no-first-run", "--disable-sync",
                             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request

        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10).read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        requests, problems, shot = [], [], None
        with websockets.connect(ws_url, max_size=None, open_timeout=20) as ws:
            for i, m in enumerate(["Network.enable", "Log.enable", "Runtime.enable", "Page.enable"], 1):
                _cdp(ws, i, m)
            _cdp(ws, 10, "Page.navigate", {"url": page.as_uri()})
            # Readiness is polled (document.readyState and the URL) rather than taken from a
            # single Page.loadEventFired, which can belong to the initial about:blank and then
            # never come for the report: that race made this test hang now and then.
            want = page.as_uri()
            next_id, poll_id, shot_id, text_id, rendered = 100, None, None, 30, ""
            deadline = time.monotonic() + 240  # generous: a loaded 2-core machine is slow
            while shot is None and time.monotonic() < deadline:
                if poll_id is None and shot_id is None:
                    next_id += 1
                    poll_id = next_id
                    _cdp(ws, poll_id, "Runtime.evaluate",
                         {"expression": "document.readyState + '|' + location.href", "returnByValue": True})
                try:
                    msg = json.loads(ws.recv(timeout=1))
                except TimeoutError:
                    continue
                meth = msg.get("method")
                if meth == "Network.requestWillBeSent":
                    requests.append(msg["params"]["request"]["url"])
                elif meth == "Runtime.exceptionThrown":
                    problems.append(msg["params"]["exceptionDetails"].get("text"))
                elif meth == "Runtime.consoleAPICalled" and msg["params"]["type"] in ("error", "warning"):
                    problems.append(str(msg["params"]["args"])[:200])
                elif meth == "Log.entryAdded" and msg["params"]["entry"]["level"] in ("error", "warning"):
                    problems.append(msg["params"]["entry"]["text"])
                elif poll_id is not None and msg.get("id") == poll_id:
                    poll_id = None
                    if msg.get("result", {}).get("result", {}).get("value") == f"complete|{want}":
                        _cdp(ws, text_id, "Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True})
                        shot_id = 20
                        _cdp(ws, shot_id, "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
                    else:
                        time.sleep(0.1)
                elif msg.get("id") == text_id:
                    rendered = msg["result"]["result"]["value"]
                elif shot_id is not None and msg.get("id") == shot_id:
                    shot = base64.b64decode(msg["result"]["data"])
        assert shot and shot[:8] == b"\x89PNG\r\n\x1a\n"
        # what a reader sees: the rule set evaluated, the human review with its event id, the new rule
        assert "Rule set eu-ai-act@2" in rendered and "human-oversight" in rendered
        assert "Human reviews of run run-1" in rendered and rep["reviews"][0]["reviews"][0]["event_id"] in rendered
        (tmp_path / "report.png").write_bytes(shot)
        assert not problems, problems
        assert requests and all(u == page.as_uri() for u in requests), requests
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
