"""Deterministic digests of model weights (docs/weight-digests.md).

Two digests, for two questions:

* **weights digest** (structural, over a state_dict): tensors sorted by name; each tensor is one
  RFC 9162 leaf whose entry is ``u32be(len(header)) || header || raw bytes`` with
  ``header = JCS({"name", "dtype", "shape"})`` and the raw bytes the tensor's contiguous
  little-endian storage; the digest is ``"sha256:" + hex(MTH(leaves))`` (RFC 9162 section 2.1).
  It does not depend on how or where the weights were saved, and a per-tensor leaf list lets a
  changed tensor be named (:func:`diff_tensors`) and proven by an inclusion proof.
* **file digest** (over saved files): SHA-256 of each file's bytes plus a manifest listing
  files and digests, in the spirit of OpenSSF model-signing manifests.

Hashing avoids copies: tensor bytes are exposed as a memoryview over the tensor's own storage
(bfloat16 and other dtypes are reinterpreted as uint8, not converted), large tensors are fed to
hashlib in slices, and independent tensors are hashed on a small thread pool (hashlib releases
the GIL for large buffers), so a state_dict hashes at least as fast as one hashlib stream.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_ledger.core.jcs import canonicalize

DIGEST_PREFIX = "sha256:"
WEIGHTS_DIGEST_VERSION = "rlhf-ledger-weights/v1"
MANIFEST_FORMAT = "rlhf-ledger-file-manifest/v1"
_SLICE = 64 * 1024 * 1024  # bytes per hashlib.update call for large tensors
_PARALLEL_MIN = 4 * 1024 * 1024  # tensors below this are hashed inline (pool overhead dominates)


def _leaf_prefix_hasher(name: str, dtype: str, shape: Sequence[int]) -> hashlib._Hash:
    header = canonicalize({"name": name, "dtype": dtype, "shape": list(shape)})
    h = hashlib.sha256(b"\x00")  # RFC 9162 leaf domain separation
    h.update(struct.pack(">I", len(header)))
    h.update(header)
    return h


def dtype_name(t: Any) -> str:
    """Stable dtype name: torch.bfloat16 -> "bfloat16", numpy float32 -> "float32"."""
    d = getattr(t, "dtype", None)
    s = str(d)
    return s.split(".", 1)[1] if s.startswith("torch.") else s


def tensor_bytes(t: Any) -> memoryview:
    """A zero-copy little-endian byte view of a tensor's contiguous data (CPU copy if needed)."""
    if sys.byteorder != "little":  # the format is little-endian; no such host is supported yet
        raise RuntimeError("weight digests are defined over little-endian bytes; big-endian hosts are not supported")
    try:
        import torch
    except ImportError:  # pragma: no cover - numpy-only callers
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(t, torch.Tensor):
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        if t.numel() == 0:
            return memoryview(b"")
        # view as bytes without conversion: works for bfloat16 and float8 which numpy lacks
        return memoryview(t.reshape(-1).view(torch.uint8).numpy())
    import numpy as np

    a = np.ascontiguousarray(t)
    return a.reshape(-1).view(np.uint8).data  # ndarray.data: a memoryview of its bytes


def _hash_leaf(name: str, t: Any) -> bytes:
    h = _leaf_prefix_hasher(name, dtype_name(t), tuple(int(x) for x in t.shape))
    mv = tensor_bytes(t)
    n = len(mv)
    for off in range(0, n, _SLICE):
        h.update(mv[off : off + _SLICE])
    return h.digest()


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1 Merkle Tree Hash over already-computed leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


@dataclass(frozen=True)
class WeightsDigest:
    """The digest of a state_dict with its per-tensor leaves (name order)."""

    names: tuple[str, ...]
    leaves: tuple[bytes, ...]
    root: bytes

    @property
    def digest(self) -> str:
        return DIGEST_PREFIX + self.root.hex()

    @property
    def tensor_root(self) -> str:
        return DIGEST_PREFIX + self.root.hex()

    def manifest(self) -> dict:
        """JSON form: every tensor's leaf hash, enough to point at a changed tensor later."""
        return {
            "format": WEIGHTS_DIGEST_VERSION,
            "weights_digest": self.digest,
            "tensors": [{"name": n, "leaf_hash": leaf.hex()} for n, leaf in zip(self.names, self.leaves, strict=True)],
        }


def _state_dict(model_or_state: Any) -> Mapping[str, Any]:
    sd = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    if not isinstance(sd, Mapping):
        raise TypeError(f"expected a model or a mapping of name -> tensor, got {type(model_or_state).__name__}")
    return sd


def weights_digest(model_or_state: Any, *, threads: int | None = None) -> WeightsDigest:
    """Digest of a model's state_dict (or any name -> tensor mapping); see module docstring.

    Tied weights (two names, one storage) appear once per name, as in the state_dict.
    """
    sd = _state_dict(model_or_state)
    names = sorted(sd)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"tensor names must be strings, got {n!r}")
    workers = threads if threads is not None else min(4, os.cpu_count() or 1)
    big = [n for n in names if _nbytes(sd[n]) >= _PARALLEL_MIN]
    leaves: dict[str, bytes] = {}
    if workers > 1 and len(big) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futs = {n: pool.submit(_hash_leaf, n, sd[n]) for n in big}
            for n in names:
                if n not in futs:
                    leaves[n] = _hash_leaf(n, sd[n])
            for n, f in futs.items():
                leaves[n] = f.result()
    else:
        for n in names:
            leaves[n] = _hash_leaf(n, sd[n])
    ordered = tuple(leaves[n] for n in names)
    return WeightsDigest(tuple(names), ordered, mth(ordered))


def _nbytes(t: Any) -> int:
    try:
        return int(t.numel()) * int(t.element_size())
    except AttributeError:
        return int(getattr(t, "nbytes", 0))


def diff_tensors(a: WeightsDigest | Any, b: WeightsDigest | Any) -> list[str]:
    """Names whose tensors differ (changed, added or removed), sorted."""
    da = a if isinstance(a, WeightsDigest) else weights_digest(a)
    db = b if isinstance(b, WeightsDigest) else weights_digest(b)
    la, lb = dict(zip(da.names, da.leaves, strict=True)), dict(zip(db.names, db.leaves, strict=True))
    return sorted(n for n in set(la) | set(lb) if la.get(n) != lb.get(n))


# --- files ---------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike) -> str:
    """"sha256:<hex>" of a file's bytes (streamed, no full read into memory)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return DIGEST_PREFIX + hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise OSError(f"{p}: cannot hash file: {e.strerror or e}") from None


def file_manifest(root: str | os.PathLike, files: Iterable[str] | None = None) -> dict:
    """Per-file SHA-256 manifest of a saved model directory (or a single file).

    Paths are POSIX, relative to ``root``, sorted; ``files`` restricts the listing (default: every
    regular file under root, symlinks not followed). ``digest`` is SHA-256 over JCS of the
    resources list, so one value names the whole directory.
    """
    base = Path(root)
    if base.is_file():
        rel = [base.name]
        base = base.parent
    elif files is not None:
        rel = sorted(files)
    else:
        rel = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and not p.is_symlink())
    resources = [{"name": r, "algorithm": "sha256", "digest": file_digest(base / r)[len(DIGEST_PREFIX):]} for r in rel]
    return {
        "format": MANIFEST_FORMAT,
        "resources": resources,
        "digest": DIGEST_PREFIX + hashlib.sha256(canonicalize(resources)).hexdigest(),
    }
