"""The event phase reads raw blocks of whole lines and hands them to workers: the verdict and
the findings must not depend on block boundaries, on the number of workers, on CRLF line ends or
on a missing final newline; a broken line is still named by its number."""

import pytest
from factory import build_bundle

from rlhf_verifier import verify
from rlhf_verifier.cli import load_log_key, load_producer_key
from rlhf_verifier.verify import CannotRun, Options, verify_file


def _opts(b, jobs):
    return Options(log_keys=[load_log_key(b.log_vkey)], producer_keys=[load_producer_key(k) for k in b.producer_keys],
                   jobs=jobs)


def _run(b, jobs):
    r = verify_file(str(b.path), _opts(b, jobs))
    return r.valid, r.events, [f.line() for f in r.findings]


@pytest.mark.parametrize("block_bytes", [1, 700, 1 << 20])
def test_same_result_whatever_the_blocks_and_workers(tmp_path, monkeypatch, block_bytes):
    monkeypatch.setattr(verify, "BLOCK_BYTES", block_bytes)
    b = build_bundle(tmp_path / "b.jsonl", mode="tree", checkpoint_sizes=[5, 14], extra_leaves=2)
    lines = b.path.read_bytes().split(b"\n")
    i = next(k for k, line in enumerate(lines) if b'"seq": 3' in line)
    lines[i] = lines[i].replace(b'"seq": 3', b'"seq": 4')  # one broken event in the middle
    b.path.write_bytes(b"\n".join(lines))
    inline, pooled = _run(b, 1), _run(b, 2)
    assert inline == pooled and inline[0] is False
    assert any(f"line {i + 1}" in f for f in inline[2])


def test_crlf_and_no_final_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "BLOCK_BYTES", 500)
    b = build_bundle(tmp_path / "b.jsonl")
    text = b.path.read_bytes().rstrip(b"\n").replace(b"\n", b"\r\n")
    b.path.write_bytes(text)
    assert _run(b, 1)[0] is True and _run(b, 2)[0] is True


@pytest.mark.parametrize("jobs", [1, 2])
def test_empty_line_among_events_is_named(tmp_path, monkeypatch, jobs):
    monkeypatch.setattr(verify, "BLOCK_BYTES", 300)
    b = build_bundle(tmp_path / "b.jsonl")
    lines = b.path.read_bytes().split(b"\n")
    i = next(k for k, line in enumerate(lines) if b'"kind": "event"' in line) + 2
    lines.insert(i, b"  ")
    b.path.write_bytes(b"\n".join(lines))
    with pytest.raises(CannotRun, match=f"line {i + 1}: empty line"):
        verify_file(str(b.path), _opts(b, jobs))
