"""canonicalize_parsed (the hot-path JCS of parsed events) is byte-identical to canonicalize on
generated JSON values, including the cases it hands to the general path (exponent floats, -0.0,
integral floats, 16+ digit integers, strings that look like numbers, non-BMP and high BMP text,
lone surrogates, unsafe integers)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_verifier.jcs import JCSError, canonicalize, canonicalize_parsed

tricky_text = st.sampled_from(['1.0,', '"', '\\', '\\"1.0]', 'e5', '-0.0}', '\n\x01', 'é', '\ue000', '\U0001f600',
                               '\ud800', '9007199254740993'])
strings = st.text(max_size=8) | tricky_text
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1.0, -3.0, 1e-7, 1e-5, 1e16, 1e21, 2.5, 0.1, 1.7117701662429012, 9007199254740992.0])
ints = st.integers(-(2**53) + 1, 2**53 - 1) | st.sampled_from([2**53, -(2**53), 10**20])
scalars = st.none() | st.booleans() | ints | floats | strings
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(strings, c, max_size=4),
                      max_leaves=12)


def _outcome(f, v):
    try:
        return f(v)
    except JCSError as e:
        return ("error", type(e))


@pytest.mark.slow
@settings(max_examples=800, deadline=None)
@given(st.dictionaries(strings, values, max_size=5) | st.lists(values, max_size=5))
def test_same_bytes_as_the_general_path(v):
    assert _outcome(canonicalize_parsed, v) == _outcome(canonicalize, v)


@pytest.mark.parametrize("text, expected", [
    ('{"b":1.0,"a":"1.0,","c":[0.0,-0.0,2.50,1e-7,1e16,100]}', b'{"a":"1.0,","b":1,"c":[0,0,2.5,1e-7,10000000000000000,100]}'),
    ('{"x":"\\"1.0]","y":-12.0}', b'{"x":"\\"1.0]","y":-12}'),
])
def test_known_values(text, expected):
    assert canonicalize_parsed(json.loads(text)) == expected
