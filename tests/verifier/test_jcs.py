import json
import math
import random
import struct

import pytest
import rfc8785

from rlhf_verifier.jcs import JCSError, canonicalize, format_number

# RFC 8785 Appendix B (IEEE-754 bit patterns -> ES6 strings)
RFC_B = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize("bits,expected", RFC_B)
def test_rfc8785_number_vectors(bits, expected):
    x = struct.unpack(">d", bytes.fromhex(bits))[0]
    if x.is_integer() and abs(x) > 2**53 - 1:
        # the event format refuses integers beyond the safe range; as floats they still format
        assert format_number(float(x)) == expected
    else:
        assert format_number(x) == expected


def test_rfc8785_example_object():
    # RFC 8785 section 3.2.2 input and its canonical output
    src = '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], ' \
          '"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}'
    want = '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],' \
           '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonicalize(json.loads(src)).decode() == want


def test_utf16_key_order():
    # RFC 8785 3.2.3: sorted by UTF-16 code units (U+1F600 sorts before U+FB33 there)
    obj = {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7}
    assert canonicalize(obj) == rfc8785.dumps(obj)


def test_refusals():
    for bad in (math.nan, math.inf, 2**53, {"a": "\ud800"}, {1: 2}):
        with pytest.raises(JCSError):
            canonicalize(bad)


def _rand(rng, depth=0):
    t = rng.randrange(7 if depth < 4 else 4)
    if t == 0:
        return rng.choice([None, True, False])
    if t == 1:
        return rng.randint(-(2**53 - 1), 2**53 - 1)
    if t == 2:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return x if math.isfinite(x) else 0.5
    if t == 3:
        return "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800),
                                       rng.randrange(0xE000, 0x110000)])) for _ in range(rng.randrange(6)))
    if t in (4, 5):
        return {_rand(rng, 9) if False else str(_rand(rng, 9)): _rand(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_rand(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_agrees_with_rfc8785_package_on_random_values():
    rng = random.Random(8785)
    for _ in range(3000):
        v = _rand(rng)
        assert canonicalize(v) == rfc8785.dumps(v)
    for _ in range(20000):
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            assert format_number(x) == rfc8785.dumps(x).decode()
