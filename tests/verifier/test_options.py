"""Options from a library caller (not the CLI): each pinned key is reported with its own source,
so a list of sources that does not pair with the keys is refused before any work, never
silently cut short (a pinned key without its source would otherwise not be pinned at all)."""

import pytest
from factory import build_bundle

from rlhf_verifier.cli import load_log_key, load_producer_key
from rlhf_verifier.verify import CannotRun, Options, verify_file


def _opts(b, **kw):
    return Options(log_keys=[load_log_key(b.log_vkey)], producer_keys=[load_producer_key(k) for k in b.producer_keys],
                   jobs=1, **kw)


def test_each_pinned_key_is_reported_with_its_source(tmp_path):
    b = build_bundle(tmp_path / "b.jsonl")
    srcs = [f"producer source {i}" for i in range(len(b.producer_keys))]
    r = verify_file(str(b.path), _opts(b, log_key_sources=["log source"], producer_key_sources=srcs))
    assert r.valid, [f.line() for f in r.findings]
    assert "pinned: log source" in r.trusted["log_keys_source"]
    assert all(s in r.trusted["producer_keys_source"] for s in srcs)


@pytest.mark.parametrize("field", ["log_key_sources", "producer_key_sources"])
@pytest.mark.parametrize("count", [2, 5])
def test_sources_that_do_not_pair_with_the_keys_are_refused(tmp_path, field, count):
    b = build_bundle(tmp_path / "b.jsonl")
    opts = _opts(b, **{field: [f"source {i}" for i in range(count)]})
    keys = len(opts.log_keys if field == "log_key_sources" else opts.producer_keys)
    assert keys != count
    with pytest.raises(CannotRun, match=f"Options.{field} names {count} source"):
        verify_file(str(b.path), opts)
