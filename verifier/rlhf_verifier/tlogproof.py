"""c2sp.org/tlog-proof@v1 files (docs/checkpoint-format.md, "Single-event proofs").

    c2sp.org/tlog-proof@v1
    extra <base64 entry>
    index <decimal>
    <base64 hash>...           inclusion proof, leaf sibling first
    <blank line>
    <signed checkpoint note>

Checked against a policy of trusted log verifier keys: the note must verify under one of
them, and the entry's leaf hash with the proof must lead to the note's root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .merkle import ProofError, leaf_hash, verify_inclusion
from .note import Checkpoint, NoteError, VerifierKey, b64decode_strict, verify_checkpoint

HEADER = "c2sp.org/tlog-proof@v1"
_DEC = re.compile(r"0|[1-9][0-9]{0,19}")


class TlogProofError(ValueError):
    pass


@dataclass(frozen=True)
class TlogProof:
    entry: bytes | None
    index: int
    proof: list[bytes]
    checkpoint: Checkpoint


def verify_tlog_proof(text: str, trusted: list[VerifierKey]) -> TlogProof:
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise TlogProofError("no blank line between the proof and the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise TlogProofError(f"first line must be {HEADER!r}")
    i = 1
    entry = None
    try:
        if i < len(lines) and lines[i].startswith("extra "):
            entry = b64decode_strict(lines[i][6:], "extra")
            i += 1
        if i >= len(lines) or not lines[i].startswith("index ") or not _DEC.fullmatch(lines[i][6:]):
            raise TlogProofError("missing 'index <decimal>' line")
        index = int(lines[i][6:])
        proof = [b64decode_strict(x, f"proof hash {k}", 32) for k, x in enumerate(lines[i + 1 :])]
        cp = verify_checkpoint(note, trusted)
    except NoteError as e:
        raise TlogProofError(str(e)) from None
    if entry is None:
        raise TlogProofError("no 'extra' line with the entry: the record hash cannot be recomputed")
    try:
        verify_inclusion(index, cp.size, leaf_hash(entry), proof, cp.root)
    except ProofError as e:
        raise TlogProofError(str(e)) from None
    return TlogProof(entry, index, proof, cp)
