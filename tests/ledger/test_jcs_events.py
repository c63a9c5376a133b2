"""Canonical JSON (RFC 8785) and the event format: the fast path agrees with the maintained
`rfc8785` package, RFC 8785 examples hold, and events/commitments behave as docs/event-format.md says."""

from __future__ import annotations

import base64
import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_ledger.core.errors import CanonicalError, EventError
from rlhf_ledger.core.events import (
    check_openings,
    commit_fields,
    commit_value,
    make_event,
    parse_envelope,
    sign_event,
    validate_event,
)
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer, key_id

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not 2**53 <= abs(f) < 1e21)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(json_values)
def test_canonicalize_agrees_with_rfc8785_package(value):
    try:
        want = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(CanonicalError):
            canonicalize(value)
        return
    assert canonicalize(value) == want


fast_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"))
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
)
fast_values = st.recursive(
    fast_scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8), inner, max_size=5),
    max_leaves=30,
)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(fast_values)
def test_fast_path_printer_equals_the_stdlib_encoder(value):
    """The fast path prints with orjson; for every value it takes, that must be byte for byte
    what the standard library's encoder writes (whose equality with JCS is argued in jcs.py)."""
    import json

    from rlhf_ledger.core import jcs

    if not jcs._fast_ok(value):
        return
    stdlib = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    assert jcs._dumps(value) == stdlib
    assert canonicalize(value) == rfc8785.dumps(value)


def test_lone_surrogates_are_refused_with_a_clear_error():
    with pytest.raises(CanonicalError, match="surrogates"):
        canonicalize({"a": "\ud800"})
    ev = make_event(log_id="l", run_id="r", type="t", producer="0" * 64, seq=0, prev=None, body={"x": "ok"})
    ev["body"]["x"] = "\udfff"
    with pytest.raises(EventError, match="surrogates"):
        validate_event(ev)


@pytest.mark.parametrize(
    "value, text",
    [
        # RFC 8785 section 3.2.2.3 / appendix B number serialisation examples
        (0.0, "0"), (-0.0, "0"), (1e21, "1e+21"), (1e-7, "1e-7"), (333333333.3333333, "333333333.3333333"),
        (4.5, "4.5"), (0.002, "0.002"), (1e-27, "1e-27"), (9007199254740991, "9007199254740991"),
        (2.0, "2"), (-5e-324, "-5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        # key order is by UTF-16 code units; strings keep non-ASCII as UTF-8
        # (RFC 8785 section 3.2.3: U+FB33 sorts after U+1F600, whose first UTF-16 unit is D83D)
        ({"\u20ac": 1, "\r": 2, "\ufb33": 7, "1": 3, "\U0001f600": 4, "\u0080": 5, "\u00f6": 6},
         '{"\\r":2,"1":3,"\u0080":5,"\u00f6":6,"\u20ac":1,"\U0001f600":4,"\ufb33":7}'),
        ({"b": [1, None, True, "\u0001x"]}, '{"b":[1,null,true,"\\u0001x"]}'),
    ],
)
def test_rfc8785_examples(value, text):
    assert canonicalize(value) == text.encode("utf-8")


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**53, {"a": 3.2e18}, {1: "non-string key"}])
def test_values_jcs_cannot_carry_are_refused(bad):
    with pytest.raises(CanonicalError):
        canonicalize(bad)


def _event(signer, **kw):
    base = dict(log_id="default", run_id="run-1", type="policy.update", producer=signer.key_id, seq=0, prev=None, body={"step": 1})
    base.update(kw)
    return make_event(**base)


def test_key_id_is_sha256_of_public_key():
    s = Signer.from_seed(bytes(32))
    import hashlib

    assert s.key_id == key_id(s.public_key) == hashlib.sha256(s.public_key).hexdigest()


def test_envelope_entry_is_jcs_of_envelope_and_signature_covers_jcs_event():
    s = Signer.generate()
    env = sign_event(_event(s, body={"loss": 0.5, "note": "é"}), s)
    p = parse_envelope(env)
    assert p.entry == canonicalize(env)
    p.verify_signature(s.public_key)
    assert s.public_key and len(base64.b64decode(env["sig"])) == 64


def test_prev_must_be_null_exactly_at_seq_zero():
    s = Signer.generate()
    with pytest.raises(EventError, match="null when seq is 0"):
        _event(s, seq=0, prev="a" * 64)
    with pytest.raises(EventError, match="previous event"):
        _event(s, seq=1, prev=None)


def test_impossible_dates_are_refused():
    s = Signer.generate()
    with pytest.raises(EventError) as ei:
        _event(s, ts="2026-02-30T00:00:00Z")
    assert ei.value.where == "event.ts"


def test_producer_must_sign_its_own_events():
    a, b = Signer.generate(), Signer.generate()
    with pytest.raises(EventError, match="signing key"):
        sign_event(_event(a), b)


def test_commitments_open_and_reject_wrong_openings():
    body, openings = commit_fields({"prompt": "p", "response": {"text": "r"}, "step": 3}, ["prompt", "response"])
    assert body["step"] == 3 and set(body["prompt"]) == {"$commitment"}
    check_openings(body, openings)
    salt = base64.b64decode(openings["prompt"]["salt"])
    assert body["prompt"]["$commitment"] == commit_value("p", salt)
    forged = {"prompt": {"salt": openings["prompt"]["salt"], "value": "q"}}
    with pytest.raises(EventError, match="does not match"):
        check_openings(body, forged)
    with pytest.raises(EventError, match="no commitment"):
        check_openings(body, {"step": {"salt": openings["prompt"]["salt"], "value": 3}})


def test_malformed_commitment_object_is_refused():
    s = Signer.generate()
    with pytest.raises(EventError) as ei:
        validate_event(_event(s) | {"body": {"x": {"$commitment": "md5:abc"}}})
    assert ei.value.where == "event.body.x"
