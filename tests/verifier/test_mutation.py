"""Systematic mutation: flip a bit of every character (and bump every number) of every signed
or hashed field of a valid bundle, one at a time; the verifier must reject each mutant.

Exempt, by the specs: the header (not signed; the verifier pins its own keys), the `end`
record's own counts are covered by truncation tests, and the evidence locators `tx_hash` and
`log_index` which docs/anchor-evidence.md says are not proven ("What is not proven").
Runs in-process on in-memory bytes, a few thousand verifications in seconds.
"""

import base64
import io
import json
import multiprocessing
import string

import pytest
from factory import build_bundle, run_events

from rlhf_verifier.cli import load_log_key, load_producer_key
from rlhf_verifier.verify import CannotRun, Options, Verifier

LOCATORS = {("evidence", "tx_hash"), ("evidence", "log_index")}


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path, obj


def _set(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _mutants(rec):
    """Yield (description, mutated record) for every character / number of the record."""
    for path, v in _leaves(rec):
        if path == ("kind",) or path[-2:] in LOCATORS:
            continue
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            m = json.loads(json.dumps(rec))
            _set(m, path, v + 1)
            yield f"{path} {v}->+1", m
        elif isinstance(v, str) and _is_hex(v):
            raw = bytes.fromhex(v[2:])
            for i in range(len(raw)):  # one bit of every byte; upper/lower case kept (EIP-55 fields)
                m = json.loads(json.dumps(rec))
                mut = raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :]
                text = "0x" + "".join(a if a.lower() == b else b for a, b in zip(v[2:], mut.hex(), strict=True))
                _set(m, path, text)
                yield f"{path} byte {i}", m
        elif isinstance(v, str) and _is_b64(v):
            raw = base64.b64decode(v)
            for i in range(len(raw)):
                m = json.loads(json.dumps(rec))
                _set(m, path, base64.b64encode(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :]).decode())
                yield f"{path} byte {i}", m
        elif isinstance(v, str):
            for i, c in enumerate(v):
                m = json.loads(json.dumps(rec))
                _set(m, path, v[:i] + chr(ord(c) ^ 1) + v[i + 1 :])
                yield f"{path}[{i}]", m
    # renamed members inside the signed envelope
    env = rec.get("envelope")
    if isinstance(env, dict):
        for path, _ in _leaves(env["event"]):
            if len(path) >= 1:
                m = json.loads(json.dumps(rec))
                parent = m["envelope"]["event"]
                for p in path[:-1]:
                    parent = parent[p]
                if isinstance(parent, dict):
                    key = path[-1]
                    parent[key + "x"] = parent.pop(key)
                    yield f"rename {path}", m


def _is_hex(v: str) -> bool:
    return len(v) > 2 and v.startswith("0x") and len(v) % 2 == 0 and all(c in string.hexdigits for c in v[2:])


def _is_b64(v: str) -> bool:
    try:
        return len(v) >= 8 and base64.b64encode(base64.b64decode(v, validate=True)).decode() == v
    except ValueError:
        return False


def _verify(data: bytes, opts: Options) -> bool:
    try:
        return Verifier(opts).run(io.BytesIO(data), len(data)).valid
    except CannotRun:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["inclusion", "tree"])
def test_every_mutation_is_rejected(tmp_path, mode):
    events = run_events(1)[:4]
    b = build_bundle(tmp_path / "b.jsonl", mode=mode, events=events, checkpoint_sizes=[3, 4 + (mode == "tree")],
                     anchor_sizes=[4 + (mode == "tree")], extra_leaves=1 if mode == "tree" else 0)
    opts = Options(log_keys=[load_log_key(b.log_vkey)], producer_keys=[load_producer_key(k) for k in b.producer_keys],
                   chain_id=b.chain_id, contract=bytes.fromhex(b.contract[2:]),
                   trusted_block_hashes={bytes.fromhex(h[2:]) for h in b.block_hashes}, jobs=1)
    lines = b.lines
    assert _verify(("\n".join(lines) + "\n").encode(), opts)
    jobs = []
    for li, text in enumerate(lines):
        rec = json.loads(text)
        if rec["kind"] in ("header", "end") or (mode == "tree" and rec["kind"] == "anchor"):
            continue  # anchors are checked by the same code in both modes; mutated in inclusion mode
        for desc, m in _mutants(rec):
            jobs.append((li, desc, json.dumps(m, ensure_ascii=False)))
    # forkserver: a plain fork from the test runner can inherit a lock held by another thread.
    with multiprocessing.get_context("forkserver").Pool(2, initializer=_set_case, initargs=((lines, opts),)) as pool:
        survivors = [s for s in pool.map(_check_mutant, jobs, chunksize=64) if s]
    assert len(jobs) > 1000
    assert not survivors, f"{len(survivors)} of {len(jobs)} mutations accepted: {survivors[:10]}"


_CASE = None


def _set_case(case) -> None:
    global _CASE
    _CASE = case


def _check_mutant(job):
    li, desc, text = job
    lines, opts = _CASE
    data = ("\n".join(lines[:li] + [text] + lines[li + 1 :]) + "\n").encode()
    return None if not _verify(data, opts) else f"line {li + 1}: {desc}"
