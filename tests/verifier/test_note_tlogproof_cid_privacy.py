import base64
import hashlib
import math

import pytest

from rlhf_ledger.core.checkpoints import sign_checkpoint, vkey
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.core.merkle import InMemoryTree
from rlhf_verifier.cid import CIDError, check_content, cid_for, parse_cid
from rlhf_verifier.cli import main
from rlhf_verifier.note import NoteError, parse_vkey, verify_checkpoint
from rlhf_verifier.privacy import replay
from rlhf_verifier.tlogproof import TlogProofError, verify_tlog_proof

LOG = Signer.from_seed(hashlib.sha256(b"note-test").digest())
ORIGIN = "example.org/log"


def _tree(n=7):
    t = InMemoryTree()
    for i in range(n):
        t.append(b"entry %d" % i)
    return t


def test_checkpoint_note_roundtrip_and_rejections():
    t = _tree()
    note = sign_checkpoint(ORIGIN, 7, t.root(7), LOG)
    key = parse_vkey(vkey(ORIGIN, LOG.public_key))
    cp = verify_checkpoint(note, [key])
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 7, t.root(7))
    # a witness cosignature from an unknown key is ignored
    other = Signer.generate()
    extra = note + "\u2014 witness.example " + base64.b64encode(b"\x00" * 4 + other.sign(b"x")).decode() + "\n"
    assert verify_checkpoint(extra, [key]).size == 7
    for bad in (note.replace("\n7\n", "\n8\n"), note.replace(ORIGIN, "example.org/other"), note[:-2] + "\n",
                note.replace("\n\n", "\n")):
        with pytest.raises(NoteError):
            verify_checkpoint(bad, [key])
    with pytest.raises(NoteError):
        verify_checkpoint(note, [parse_vkey(vkey(ORIGIN, other.public_key))])
    with pytest.raises(NoteError):
        parse_vkey(vkey(ORIGIN, LOG.public_key).replace("+", "+0", 1))


def _tlog_proof(t, index, size):
    entry = b"entry %d" % index
    note = sign_checkpoint(ORIGIN, size, t.root(size), LOG)
    lines = ["c2sp.org/tlog-proof@v1", "extra " + base64.b64encode(entry).decode(), f"index {index}"]
    lines += [base64.b64encode(h).decode() for h in t.inclusion_proof(index, size)]
    return "\n".join(lines) + "\n\n" + note


def test_tlog_proof_files(tmp_path, capsys):
    t = _tree()
    key = parse_vkey(vkey(ORIGIN, LOG.public_key))
    for i in range(7):
        assert verify_tlog_proof(_tlog_proof(t, i, 7), [key]).index == i
    good = _tlog_proof(t, 3, 7)
    with pytest.raises(TlogProofError):
        verify_tlog_proof(good.replace("index 3", "index 4"), [key])
    with pytest.raises(TlogProofError):
        verify_tlog_proof(good.replace("extra ", "extra A"), [key])
    f = tmp_path / "p.txt"
    f.write_text(good)
    assert main(["tlog-proof", str(f), "--log-key", vkey(ORIGIN, LOG.public_key)]) == 0
    f.write_text(good.replace("index 3", "index 2"))
    assert main(["tlog-proof", str(f), "--log-key", vkey(ORIGIN, LOG.public_key)]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_cid_vectors_from_spec():
    assert cid_for(b"") == "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"
    assert cid_for(b"hello world\n") == "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"
    check_content("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", b"hello world\n")
    with pytest.raises(CIDError):
        check_content("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", b"hello world")
    with pytest.raises(CIDError):
        parse_cid("zQmT78")


def test_cid_agrees_with_anchoring_cid_across_layout_boundaries():
    """Agreement with the ledger side's implementation (itself tested against real Kubo)."""
    from rlhf_ledger.anchoring.cid import cid_for_bytes

    chunk = 262144
    for size in (1, 1000, chunk - 1, chunk, chunk + 1, 3 * chunk + 7, 174 * chunk, 175 * chunk + 12345):
        data = (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]
        assert cid_for(data) == cid_for_bytes(data), size


@pytest.mark.parametrize("q,sigma,steps,delta", [(0.01, 1.1, 1000, 1e-5), (0.001, 0.8, 10000, 1e-6),
                                                  (0.05, 2.0, 500, 1e-5), (0.2, 0.6, 50, 1e-3), (1e-4, 5.0, 100, 1e-5),
                                                  (1.0, 3.0, 10, 1e-5)])
def test_privacy_replay_matches_dp_accounting(q, sigma, steps, delta):
    import dp_accounting
    from dp_accounting import rdp

    acc = rdp.RdpAccountant()
    ev = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    acc.compose(dp_accounting.SelfComposedDpEvent(ev, steps))
    want = acc.get_epsilon(delta)
    got = replay([(q, sigma, steps)], delta)
    assert math.isclose(got, want, rel_tol=1e-9), (got, want)


def test_privacy_composition_of_several_spends():
    import dp_accounting
    from dp_accounting import rdp

    spends = [(0.01, 1.1, 300), (0.02, 1.3, 200), (0.01, 1.1, 500)]
    acc = rdp.RdpAccountant()
    for q, s, n in spends:
        acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), n))
    assert math.isclose(replay(spends, 1e-5), acc.get_epsilon(1e-5), rel_tol=1e-9)
