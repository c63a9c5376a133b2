"""Weight digests: determinism, sensitivity, tensor diff, dtypes, RFC 9162 root, file manifests."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.sdk.weights import diff_tensors, file_digest, file_manifest, mth, weights_digest

from .helpers import tiny_model


def test_deterministic_and_independent_of_insertion_order_and_layout():
    m = tiny_model(3)
    sd = m.state_dict()
    d1 = weights_digest(m)
    d2 = weights_digest(dict(reversed(list(sd.items()))))
    # a non-contiguous view with the same values hashes the same as its contiguous copy
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    d3 = weights_digest({"w": t.t()})
    d4 = weights_digest({"w": t.t().contiguous()})
    assert d1.digest == d2.digest and d3.digest == d4.digest
    assert d1.digest.startswith("sha256:") and len(d1.digest) == 71
    assert weights_digest(m, threads=1).digest == weights_digest(m, threads=4).digest


def test_leaf_matches_the_written_definition():
    t = torch.tensor([[1.0, -2.0], [3.5, 0.25]], dtype=torch.float32)
    header = canonicalize({"name": "layer.w", "dtype": "float32", "shape": [2, 2]})
    entry = len(header).to_bytes(4, "big") + header + t.numpy().astype("<f4").tobytes()
    want_leaf = hashlib.sha256(b"\x00" + entry).digest()
    d = weights_digest({"layer.w": t})
    assert d.leaves == (want_leaf,) and d.root == want_leaf  # a one-leaf tree's root is the leaf


def test_root_is_rfc9162_merkle_tree_hash():
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(7)]

    def ref(h):  # RFC 9162 2.1.1, written out independently
        if len(h) == 1:
            return h[0]
        k = 1
        while k * 2 < len(h):
            k *= 2
        return hashlib.sha256(b"\x01" + ref(h[:k]) + ref(h[k:])).digest()

    for n in range(1, 8):
        assert mth(leaves[:n]) == ref(leaves[:n])
    try:
        from rlhf_ledger.core.merkle import root_from_leaf_hashes
    except ImportError:
        return
    for n in range(1, 8):
        assert mth(leaves[:n]) == root_from_leaf_hashes(leaves[:n])


def test_one_changed_element_changes_the_digest_and_is_pointed_to():
    m = tiny_model(4)
    before = weights_digest(m)
    with torch.no_grad():
        m[2].bias[1] += 1e-6
    after = weights_digest(m)
    assert before.digest != after.digest
    assert diff_tensors(before, after) == ["2.bias"]
    sd = dict(m.state_dict())
    sd["extra"] = torch.zeros(1)
    assert diff_tensors(m, sd) == ["extra"]


def test_dtype_shape_and_name_are_bound():
    a = torch.zeros(4, dtype=torch.float32)
    assert weights_digest({"w": a}).digest != weights_digest({"w": a.view(torch.int32)}).digest  # same bytes
    assert weights_digest({"w": a}).digest != weights_digest({"w": a.reshape(2, 2)}).digest
    assert weights_digest({"w": a}).digest != weights_digest({"v": a}).digest


def test_bfloat16_and_numpy_are_hashed_over_their_raw_bytes():
    t = torch.randn(5, 3).to(torch.bfloat16)
    raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
    header = canonicalize({"name": "b", "dtype": "bfloat16", "shape": [5, 3]})
    assert weights_digest({"b": t}).leaves[0] == hashlib.sha256(b"\x00" + len(header).to_bytes(4, "big") + header + raw).digest()
    f = torch.randn(3, 3)
    assert weights_digest({"x": f}).digest == weights_digest({"x": f.numpy()}).digest
    assert weights_digest({"e": torch.zeros(0, 3)}).digest != weights_digest({"e": torch.zeros(3, 0)}).digest


def test_file_digest_and_manifest(tmp_path):
    m = tiny_model(5)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    fd = file_digest(tmp_path / "model.safetensors")
    assert fd == "sha256:" + hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    man = file_manifest(tmp_path)
    assert [r["name"] for r in man["resources"]] == ["config.json", "model.safetensors"]
    assert man["resources"][1]["digest"] == fd[7:]
    assert man["digest"] == "sha256:" + hashlib.sha256(canonicalize(man["resources"])).hexdigest()
    (tmp_path / "config.json").write_text("{ }")
    assert file_manifest(tmp_path)["digest"] != man["digest"]
    with pytest.raises(OSError, match="cannot hash file"):
        file_digest(tmp_path / "missing.safetensors")
