"""A Hugging Face-style model card with a provenance section (docs/sdk.md, "Model cards").

The card is Markdown with YAML front matter (the layout the Hub reads). The front matter carries
the usual keys (``license``, ``base_model``, ``datasets``, ``tags``) plus a ``provenance``
mapping, and the body repeats it for people: the log and run, the released weights digest,
every recorded checkpoint, every on-chain anchor with its transaction, the privacy budget spent
against the declared one, and the exact command a third party runs to verify the proof bundle
offline. Nothing personal is written (the card is public).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from rlhf_ledger.sdk.recorder import Run

ANCHOR_KEYS = ("checkpoint_size", "tx_hash", "block_number", "chain_id", "status")
RULES = "eu-ai-act@2"  # docs/compliance-eu-ai-act.md: versions are frozen, the bare name follows the newest


def block_hash_placeholder(block_number: int) -> str:
    """What a published command shows instead of a block hash: the reader looks the hash up."""
    return f"0x<hash of block {block_number}>"


def verify_command(*, bundle: str, chain_id: int | None = None, contract: str | None = None,
                   trusted_block_hashes: Sequence[str] = (), trusted_block: int | None = None,
                   rules: str | None = RULES, log_key: str | None = None, producer_keys: Sequence[str] = ()) -> str:
    """The ``rlhf-verify`` command line (verifier/rlhf_verifier/cli.py), shell-quoted.

    The regulator's minimal command (docs/trust-model.md): the chain id, the contract and a block
    hash the reader trusts. A public card gives ``trusted_block`` (the final anchor's block
    number), shown as a placeholder the reader fills in from a source they trust, never a hash
    from the party being audited. ``log_key``/``producer_keys`` add optional pins. The rule set
    is named with its version, so the published command gives the same verdict later."""
    parts = ["rlhf-verify", bundle]
    if chain_id is not None:
        parts += ["--chain-id", str(chain_id)]
    if contract:
        parts += ["--contract", contract]
    for h in trusted_block_hashes:
        parts += ["--trusted-block-hash", h]
    if trusted_block is not None and not trusted_block_hashes:
        parts += ["--trusted-block-hash", block_hash_placeholder(trusted_block)]
    if log_key:
        parts += ["--log-key", log_key]
    for k in producer_keys:
        parts += ["--producer-key", k]
    if rules:
        parts += ["--rules", rules]
    return " ".join(shlex.quote(p) for p in parts)


def _check_anchor(a: Mapping[str, Any], i: int) -> dict:
    missing = [k for k in ANCHOR_KEYS if k not in a]
    if missing:
        raise ValueError(f"anchors[{i}]: missing {', '.join(missing)}")
    return {k: a[k] for k in ANCHOR_KEYS}


def model_card(
    *,
    model_name: str,
    log_id: str,
    run_id: str,
    weights_digest: str | None,
    log_key: str | None,
    bundle: str,
    checkpoints: Sequence[Mapping[str, Any]] = (),
    anchors: Sequence[Mapping[str, Any]] = (),
    privacy_declared: Mapping[str, float] | None = None,
    privacy_spent_epsilon: float | None = None,
    contract: str | None = None,
    base_model: Mapping[str, Any] | None = None,
    method: str | None = None,
    datasets: Sequence[str] = (),
    license: str | None = None,
    description: str = "",
) -> str:
    anchor_rows = [_check_anchor(a, i) for i, a in enumerate(anchors)]
    chain_ids = sorted({a["chain_id"] for a in anchor_rows})
    settled = [a for a in anchor_rows if a["status"] in ("confirmed", "finalized")]
    final = max(settled, key=lambda a: a["checkpoint_size"]) if settled else None
    cmd = verify_command(bundle=bundle, chain_id=chain_ids[0] if len(chain_ids) == 1 else None, contract=contract,
                         trusted_block=final["block_number"] if final else None)
    privacy: dict[str, Any] | None = None
    if privacy_declared is not None or privacy_spent_epsilon is not None:
        privacy = {"declared": dict(privacy_declared) if privacy_declared else None, "spent_epsilon": privacy_spent_epsilon}
    provenance: dict[str, Any] = {
        "log_id": log_id,
        "run_id": run_id,
        "weights_digest": weights_digest,
        "checkpoints": [dict(c) for c in checkpoints],
        "anchors": anchor_rows,
        "privacy": privacy,
        "verify": cmd,
        # The block whose hash the reader looks up on a source they trust (docs/trust-model.md).
        "verify_block": {"chain_id": final["chain_id"], "block_number": final["block_number"]} if final else None,
        # For cross-checking only: rlhf-verify reads the log key from the contract itself.
        "log_key": log_key,
    }
    front: dict[str, Any] = {"tags": ["rlhf", "provenance"], "provenance": provenance}
    if license:
        front["license"] = license
    if base_model and base_model.get("name"):
        front["base_model"] = base_model["name"]
    if datasets:
        front["datasets"] = list(datasets)
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {model_name}", ""]
    if description:
        lines += [description, ""]
    if method:
        lines += [f"Trained with **{method}**" + (f" from `{base_model['name']}` (`{base_model.get('weights_digest')}`)." if base_model else "."), ""]
    lines += ["## Provenance", "",
              "Every training event of this run was signed by the training job and appended to a transparency log "
              "(RFC 9162) whose checkpoints are anchored on chain. The record below can be checked offline.", "",
              f"- Log: `{log_id}`", f"- Run: `{run_id}`", f"- Released weights digest: `{weights_digest}`", ""]
    if checkpoints:
        lines += ["### Checkpoints", "", "| step | weights digest | file digest |", "|---:|---|---|"]
        lines += [f"| {c.get('step')} | `{c.get('weights_digest')}` | `{c.get('file_digest', '')}` |" for c in checkpoints]
        lines.append("")
    lines += ["### Anchors", ""]
    if anchor_rows:
        lines += ["| log size | chain id | block | transaction | status |", "|---:|---:|---:|---|---|"]
        lines += [f"| {a['checkpoint_size']} | {a['chain_id']} | {a['block_number']} | `{a['tx_hash']}` | {a['status']} |"
                  for a in anchor_rows]
    else:
        lines.append("No anchor yet.")
    lines += ["", "### Differential privacy", ""]
    if privacy is None:
        lines.append("No differential-privacy budget was declared for this run.")
    else:
        d = privacy["declared"]
        declared = f"epsilon {d['epsilon']} at delta {d['delta']}" if d else "none declared"
        spent = "n/a" if privacy_spent_epsilon is None else f"{privacy_spent_epsilon:.4f}"
        lines.append(f"Spent epsilon **{spent}** against the declared budget ({declared}), RDP accountant "
                     "(dp-accounting), replayed by the verifier from the recorded events.")
    lines += ["", "### Verify", ""]
    if final is not None:
        lines += [f"Look up the hash of block **{final['block_number']}** of chain {final['chain_id']} on a source "
                  "you trust: your own node (`eth_getBlockByNumber`), a block explorer you trust, or a finalized "
                  "checkpoint of the chain. Do not take it from this card: it is the one value you trust, and "
                  "everything else (the log key, the producer keys, every anchor) is proven from it. Then download "
                  "the proof bundle and run, with that hash in place of the placeholder (no other network access "
                  "is needed; with your own node, `--rpc URL` replaces `--trusted-block-hash`):", ""]
    else:
        lines += ["Nothing of this run is anchored yet: the bundle can be checked for integrity only once an anchor "
                  "is confirmed.", ""]
    lines += ["```sh", cmd, "```", ""]
    return "\n".join(lines)


def model_card_for_run(run: Run, *, model_name: str, log_key: str, bundle: str, anchors: Sequence[Mapping[str, Any]] = (),
                       **kw: Any) -> str:
    """A card from what a finished Run recorded (producer key, checkpoints, released digest, privacy)."""
    declared = run.declared.get("privacy_budget")
    return model_card(
        model_name=model_name, log_id=run.log_id, run_id=run.run_id,
        weights_digest=run.released_digest,
        log_key=log_key, bundle=bundle, checkpoints=run.checkpoints, anchors=anchors,
        privacy_declared=declared, privacy_spent_epsilon=run.privacy.epsilon if run.privacy else None,
        base_model=run.base_model,
        method=run.method, datasets=[d.dataset_id for d in run.datasets], **kw,
    )
