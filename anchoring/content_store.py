"""Content stores: put bytes, get them back by CID, always checked against the CID.

`ContentStore` is the interface the anchoring worker uses for batch manifests. Two
implementations: `LocalContentStore` (here; a content-addressed directory, the embedded default)
and `KuboContentStore` (anchoring/kubo.py; a Kubo node's RPC API). Both name content by the same
CIDv1 (anchoring/cid.py, docs/content-ids.md), so a manifest stored in one can be checked
against a CID produced by the other.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from rlhf_ledger.anchoring.cid import CidError, cid_for_bytes, parse_cid, unixfs_blocks, verify_cid
from rlhf_ledger.core.errors import LedgerError, NotFoundError


class ContentNotFoundError(NotFoundError):
    """The store does not hold content for this CID."""


class ContentStoreUnavailable(LedgerError):
    """The store could not be reached or answered with a transient failure.

    The anchoring worker catches this as 'dependency unavailable' and retries later; it never
    means the content is wrong.
    """

    code = "dependency_unavailable"


@runtime_checkable
class ContentStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store `data`; return its CIDv1 (base32). Idempotent."""
        ...

    def get(self, cid: str) -> bytes:
        """Return the content for `cid` (v0 or v1), verified against it; raise on mismatch."""
        ...

    def has(self, cid: str) -> bool: ...

    def pin(self, cid: str) -> None:
        """Keep `cid` from being garbage-collected; raise ContentNotFoundError if not held."""
        ...


class LocalContentStore:
    """A directory of files, each named by the CIDv1 of its content.

    Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the
    directory), so a crash leaves either no file or a complete one. Nothing is ever deleted, so
    `pin` only checks presence. Reads are re-verified, so on-disk corruption or tampering is
    reported, never returned.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, cid: str) -> Path:
        # Normalise v0 and v1 spellings to the one CIDv1 file name; parse_cid rejects anything
        # that could escape the directory (only base32/base58 characters survive parsing).
        return self.directory / parse_cid(cid).v1()

    def put(self, data: bytes) -> str:
        cid = cid_for_bytes(data)
        path = self.directory / cid
        if path.exists():
            return cid
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return cid

    def get(self, cid: str) -> bytes:
        path = self._path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ContentNotFoundError("no content stored for this CID", where=f"{path}") from None
        verify_cid(cid, data)
        return data

    def has(self, cid: str) -> bool:
        try:
            return self._path(cid).is_file()
        except CidError:
            return False

    def pin(self, cid: str) -> None:
        if not self.has(cid):
            raise ContentNotFoundError("cannot pin: no content stored for this CID", where=cid)

    def blocks(self, cid: str) -> dict[str, bytes]:
        """Every dag-pb block of the stored content, keyed by CIDv1, for serving or export."""
        data = self.get(cid)
        root, blocks = unixfs_blocks(data)
        if root != parse_cid(cid).v1():
            # get() verified dag-pb content; a raw CID has no UnixFS blocks to offer
            raise CidError("content stored under a non-dag-pb CID has no UnixFS blocks", where=cid)
        return blocks

