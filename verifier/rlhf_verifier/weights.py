"""The weights digest of a released model file or directory, from docs/weight-digests.md alone.

`--weights PATH` binds a verdict to the artefact the regulator holds: the safetensors file (or
the directory of safetensors shards) is read without torch, each tensor's entry
`uint32_be(len(header)) || JCS({name, dtype, shape}) || raw little-endian bytes` is hashed as an
RFC 9162 leaf, and the Merkle tree hash over the leaves in name order gives
`"sha256:<hex>"`, to be compared with the run's signed `released_weights_digest`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from .bundle import _unique_object
from .jcs import canonicalize
from .merkle import CompactRange

if TYPE_CHECKING:
    from .verify import Result

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
CHUNK = 1 << 24
# safetensors dtype -> (the torch dtype name the digest uses, bytes per element)
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}


class WeightsError(ValueError):
    pass


Tensor: TypeAlias = tuple[str, str, list[int], Path, int, int]  # (name, dtype, shape, file, data start, data end)


def _tensors(path: Path) -> list[Tensor]:
    """(name, dtype, shape, file, data start, data end) of each tensor of one safetensors file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise WeightsError(f"{path.name}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise WeightsError(f"{path.name}: header length {n} is not inside the file")
        try:
            header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_unique_object)
        except (UnicodeDecodeError, ValueError) as e:
            raise WeightsError(f"{path.name}: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path.name}: header is not a JSON object")
    base, out = 8 + n, []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if (not isinstance(t, dict) or t.get("dtype") not in DTYPES or not isinstance(t.get("shape"), list)
                or not all(type(d) is int and d >= 0 for d in t["shape"])
                or not isinstance(t.get("data_offsets"), list) or len(t["data_offsets"]) != 2
                or not all(type(o) is int for o in t["data_offsets"])):
            raise WeightsError(f"{path.name}: tensor {name[:60]!r} needs dtype, shape and data_offsets")
        dtype, width = DTYPES[t["dtype"]]
        count = 1
        for d in t["shape"]:
            count *= d
        begin, end = t["data_offsets"]
        if not 0 <= begin <= end or base + end > size or end - begin != count * width:
            raise WeightsError(f"{path.name}: tensor {name[:60]!r} has data offsets that do not fit its shape or the file")
        out.append((name, dtype, list(t["shape"]), path, base + begin, base + end))
    return out


def weights_digest(path: str | Path) -> str:
    """The weights digest of a .safetensors file or of the *.safetensors files of a directory."""
    p = Path(path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files:
        raise WeightsError(f"{p}: no .safetensors file in this directory")
    tensors: dict[str, Tensor] = {}
    for f in files:
        for t in _tensors(f):
            if t[0] in tensors:
                raise WeightsError(f"tensor {t[0][:60]!r} is in both {tensors[t[0]][3].name} and {f.name}")
            tensors[t[0]] = t
    tree = CompactRange()
    for name in sorted(tensors):
        _, dtype, shape, f, begin, end = tensors[name]
        header = canonicalize({"name": name, "dtype": dtype, "shape": shape})
        h = hashlib.sha256(b"\x00" + struct.pack(">I", len(header)) + header)
        with open(f, "rb") as fh:
            fh.seek(begin)
            left = end - begin
            while left:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise WeightsError(f"{f.name}: file ended inside tensor {name[:60]!r}")
                h.update(chunk)
                left -= len(chunk)
        tree.append(h.digest())
    return "sha256:" + tree.root().hex()


def bind_weights(result: Result, path: str) -> None:
    """Check the artefact at `path` against the run's signed released_weights_digest; the
    outcome goes into result.weights, a difference or an unreadable artefact is a finding.
    OSError (the path cannot be read at all) is left to the caller: the run cannot be done."""
    where = f"--weights {path}"
    Path(path).stat()  # a path that cannot be read at all: the verification asked for cannot run
    scope = result.header.get("scope") if isinstance(result.header, dict) else None
    if not (isinstance(scope, dict) and scope.get("type") == "run"):
        result.fail("weights", where, "only a run bundle names the run's released weights")
        result.weights = {"path": path, "status": "not compared"}
        return
    try:
        digest = weights_digest(path)
    except WeightsError as e:
        result.fail("weights", where, str(e))
        result.weights = {"path": path, "status": "unreadable", "detail": str(e)}
        return
    run_id = scope.get("run_id")  # the header's claim, any JSON (a malformed scope is already a finding)
    released = result.released.get(run_id) if isinstance(run_id, str) else None
    if released is None or released[1] is None:
        msg = "the run has no single run.end" if released is None else "the run.end records no released_weights_digest"
        result.fail("weights", where, msg)
        result.weights = {"path": path, "digest": digest, "status": "not compared", "detail": msg}
        return
    index, want = released
    if digest != want:
        msg = f"digest {digest} differs from the run's released_weights_digest {want} (run.end, event {index})"
        result.fail("weights", where, msg)
        result.weights = {"path": path, "digest": digest, "status": "differs", "detail": msg}
        return
    result.weights = {"path": path, "digest": digest, "status": "matches",
                      "detail": f"equals the released_weights_digest of the run's signed run.end (event {index})"}
