"""--weights binds the verdict to the artefact the regulator holds (issue 10, item 8).

The digest is computed by the verifier from safetensors files alone (docs/weight-digests.md) and
must equal the run's signed released_weights_digest; the ledger's SDK computes the digest from
the torch state_dict, so the honest case is also an agreement test between the two."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
from factory import build_bundle, run_events  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from rlhf_ledger.sdk.weights import weights_digest as sdk_digest  # noqa: E402
from rlhf_verifier.cli import main  # noqa: E402
from rlhf_verifier.weights import weights_digest  # noqa: E402


def _model() -> dict:
    g = torch.Generator().manual_seed(7)
    return {"layer.0.weight": torch.randn(8, 4, generator=g), "layer.0.bias": torch.randn(8, generator=g).to(torch.bfloat16),
            "embed": torch.randint(0, 100, (3, 5), generator=g), "empty": torch.zeros(0, 2)}


def _bundle(tmp_path, digest: str):
    evs = [(t, dict(b)) for t, b in run_events()]
    for t, b in evs:
        if t == "checkpoint.save":
            b["weights_digest"] = digest
        if t == "run.end":
            b["released_weights_digest"] = digest
    return build_bundle(tmp_path / "b.jsonl", events=evs)


def _run(b, capsys, *extra):
    code = main([str(a) for a in b.args("--json", *extra)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def test_verifier_digest_equals_the_sdk_digest_for_a_file_and_for_shards(tmp_path):
    sd = _model()
    want = "sha256:" + sdk_digest(sd).root.hex()
    save_file(sd, str(tmp_path / "model.safetensors"))
    assert weights_digest(tmp_path / "model.safetensors") == want
    shards = tmp_path / "shards"
    shards.mkdir()
    names = sorted(sd)
    save_file({k: sd[k] for k in names[:2]}, str(shards / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in names[2:]}, str(shards / "model-00002-of-00002.safetensors"))
    assert weights_digest(shards) == want  # the digest does not depend on how the model is sharded


def test_the_released_artefact_matches_and_another_one_does_not(tmp_path, capsys):
    sd = _model()
    save_file(sd, str(tmp_path / "model.safetensors"))
    b = _bundle(tmp_path, "sha256:" + sdk_digest(sd).root.hex())
    code, rep, _ = _run(b, capsys, "--weights", tmp_path / "model.safetensors")
    assert code == 0, rep["findings"]
    assert rep["weights"]["status"] == "matches"

    other = dict(sd)
    other["layer.0.weight"] = other["layer.0.weight"].clone()
    other["layer.0.weight"][0, 0] += 1.0  # one weight changed
    save_file(other, str(tmp_path / "other.safetensors"))
    code, rep, _ = _run(b, capsys, "--weights", tmp_path / "other.safetensors")
    assert code == 1 and rep["weights"]["status"] == "differs"
    assert any(f["check"] == "weights" and "differs from the run's released_weights_digest" in f["message"]
               for f in rep["findings"])


def test_a_retyped_tensor_with_the_same_bytes_is_another_model(tmp_path, capsys):
    sd = _model()
    b = _bundle(tmp_path, "sha256:" + sdk_digest(sd).root.hex())
    retyped = dict(sd)
    retyped["layer.0.weight"] = sd["layer.0.weight"].view(torch.int32)  # same bytes, other dtype
    save_file(retyped, str(tmp_path / "retyped.safetensors"))
    code, rep, _ = _run(b, capsys, "--weights", tmp_path / "retyped.safetensors")
    assert code == 1 and rep["weights"]["status"] == "differs"


@pytest.mark.parametrize("damage", ["truncate", "header", "duplicate"])
def test_a_malformed_artefact_is_a_finding(tmp_path, capsys, damage):
    sd = _model()
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[:-7])
    elif damage == "header":
        path.write_bytes((2**40).to_bytes(8, "little") + raw[8:])
    else:
        n = int.from_bytes(raw[:8], "little")
        header = raw[8:8 + n].decode()
        first = header[1:header.index("},") + 1]
        dup = ("{" + first + "," + header[1:]).encode()
        path.write_bytes(len(dup).to_bytes(8, "little") + dup + raw[8 + n:])
    b = _bundle(tmp_path, "sha256:" + sdk_digest(sd).root.hex())
    code, rep, _ = _run(b, capsys, "--weights", path)
    assert code == 1 and rep["weights"]["status"] == "unreadable"


def test_weights_need_a_run_bundle_and_a_readable_path(tmp_path, capsys):
    sd = _model()
    save_file(sd, str(tmp_path / "model.safetensors"))
    b = _bundle(tmp_path, "sha256:" + sdk_digest(sd).root.hex())
    lines = b.path.read_text().splitlines()
    header = json.loads(lines[0])
    header["scope"] = {"type": "range", "start": 0, "end": 11}
    b.path.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    code, rep, _ = _run(b, capsys, "--weights", tmp_path / "model.safetensors")
    assert code == 1 and any("only a run bundle" in f["message"] for f in rep["findings"])
    code, rep, err = _run(b, capsys, "--weights", tmp_path / "missing.safetensors")
    assert code == 2 and rep is None and "cannot read --weights" in err


def test_a_run_scope_with_a_run_id_that_is_not_a_string_is_a_finding_not_a_crash(tmp_path, capsys):
    sd = _model()
    save_file(sd, str(tmp_path / "model.safetensors"))
    b = _bundle(tmp_path, "sha256:" + sdk_digest(sd).root.hex())
    lines = b.path.read_text().splitlines()
    header = json.loads(lines[0])
    header["scope"] = {"type": "run", "run_id": [header["scope"]["run_id"]]}  # unhashable: no dict key
    b.path.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    code, rep, err = _run(b, capsys, "--weights", tmp_path / "model.safetensors")
    assert code == 1 and "internal error" not in err, err
    assert any(f["check"] == "scope" for f in rep["findings"])
    assert rep["weights"]["status"] == "not compared"
