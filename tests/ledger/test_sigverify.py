"""ledger.sigverify: libsodium's verdicts through the GIL-free loop, checked against PyNaCl's
own binding (the same library, called one signature at a time)."""

from __future__ import annotations

import hashlib
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_ledger.core import sigverify
from rlhf_ledger.core.keys import Signer, verify

_SIGNERS = [Signer.from_seed(hashlib.sha256(b"sv%d" % i).digest()) for i in range(3)]


def _items(msgs):
    ks, ms, ss = [], [], []
    for i, m in enumerate(msgs):
        s = _SIGNERS[i % 3]
        ks.append(s.public_key)
        ms.append(m)
        ss.append(s.sign(m))
    return ks, ms, ss


def test_the_loop_is_built_here():
    # The project's own install builds it; without it the fallback below still holds.
    assert sigverify._LOOP is not None, sigverify.engine()


@settings(max_examples=50, deadline=None)
@given(msgs=st.lists(st.binary(max_size=200), min_size=0, max_size=120),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["key", "msg", "sig", "short"])), max_size=6))
def test_verdicts_equal_pynacl(msgs, flips):
    ks, ms, ss = _items(msgs)
    for pos, what in flips:
        if not msgs:
            break
        i = pos % len(msgs)
        if what == "key":
            ks[i] = _SIGNERS[(i + 1) % 3].public_key
        elif what == "msg":
            ms[i] = ms[i] + b"!"
        elif what == "sig":
            ss[i] = bytes([ss[i][0] ^ 1]) + ss[i][1:]
        else:
            ss[i] = ss[i][:63]
    assert sigverify.verify_many(ks, ms, ss) == [verify(k, m, s) for k, m, s in zip(ks, ms, ss, strict=True)]


def test_bad_arguments():
    ks, ms, ss = _items([b"a", b"b"])
    with pytest.raises(ValueError):
        sigverify.verify_many(ks, ms, ss[:1])
    if sigverify._LOOP is not None:
        with pytest.raises(TypeError):
            sigverify.verify_many(ks, ["text", b"b"], ss)
    assert sigverify.verify_many([ks[0][:31]], ms[:1], ss[:1]) == [False]


@pytest.mark.slow
def test_lists_changed_by_another_thread_during_a_check_do_not_matter():
    ks, ms, ss = _items([b"x" * 100] * 3000)
    stop = threading.Event()

    def churn():  # replaces the list's items by equal new objects: the old ones may be freed
        i = 0
        while not stop.is_set():
            ms[i % 3000] = bytes(bytearray(ms[i % 3000]))
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(3):
            assert sigverify.verify_many(ks, ms, ss) == [True] * 3000
    finally:
        stop.set()
        t.join()


def test_fallback_without_the_loop(monkeypatch):
    ks, ms, ss = _items([b"a", b"b"])
    ms[1] = b"c"
    monkeypatch.setattr(sigverify, "_LOOP", None)
    assert "one call per signature" in sigverify.engine()
    assert sigverify.verify_many(ks, ms, ss) == [True, False]
