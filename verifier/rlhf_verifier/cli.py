"""rlhf-verify: check a proof bundle (or a tlog-proof file) offline.

Exit status (docs/verifier.md, "Exit status"): 0 VALID: everything printed as proven is proven
from what was trusted (and, with --rules, the rules were assessed and pass); 1 INVALID,
non-compliant or rules not assessed; 2 could not run. Errors are one line each; never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
import time
from pathlib import Path

from .note import NoteError, VerifierKey, parse_vkey

EXIT_VALID, EXIT_INVALID, EXIT_CANNOT_RUN = 0, 1, 2


class UsageError(Exception):
    pass


def _read_file(path: str, opt: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{opt} {path[:200]}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def _value_or_at(value: str, opt: str) -> tuple[str, str]:
    """(text, source) of a key given as a value, or as `@path` (read from that file). A value is
    never read as a file because a file of that name happens to exist (docs/verifier.md)."""
    if value.startswith("@"):
        return _read_file(value[1:], opt), f"{opt} @{value[1:]} (file)"
    return value.strip(), f"{opt} (value on the command line)"


def parse_log_key(text: str, what: str) -> VerifierKey:
    try:
        return parse_vkey(text.splitlines()[0] if text else text)
    except NoteError as e:
        raise UsageError(f"{what}: {e}") from None


def load_log_key(value: str) -> VerifierKey:
    """A C2SP vkey value, or `@path`: kept for callers of the old API (tlog-proof)."""
    text, _ = _value_or_at(value, "--log-key")
    return parse_log_key(text, f"--log-key {value[:60]}")


def parse_producer_key(text: str, what: str) -> bytes:
    """Base64 or hex of a raw 32-byte Ed25519 key, or key-file JSON with public_key."""
    if text.startswith("{"):
        try:
            text = json.loads(text)["public_key"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{what}: JSON without a public_key member") from None
        if not isinstance(text, str):
            raise UsageError(f"{what}: public_key must be a string")
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise UsageError(f"{what}: not a 32-byte Ed25519 public key (base64 or hex)")
    return raw


def load_producer_key(value: str) -> bytes:
    text, _ = _value_or_at(value, "--producer-key")
    return parse_producer_key(text, f"--producer-key {value[:60]}")


def trust_inputs(a: argparse.Namespace) -> tuple[list[VerifierKey], list[str], list[bytes], list[str]]:
    """Keys and the exact source of each, for the report's "Trusted" section."""
    log_keys, log_src, prod_keys, prod_src = [], [], [], []
    for v in a.log_key:
        text, src = _value_or_at(v, "--log-key")
        log_keys.append(parse_log_key(text, f"--log-key {v[:60]}"))
        log_src.append(src)
    for path in a.log_key_file:
        log_keys.append(parse_log_key(_read_file(path, "--log-key-file"), f"--log-key-file {path[:60]}"))
        log_src.append(f"--log-key-file {path} (file)")
    for v in a.producer_key:
        text, src = _value_or_at(v, "--producer-key")
        prod_keys.append(parse_producer_key(text, f"--producer-key {v[:60]}"))
        prod_src.append(src)
    for path in a.producer_key_file:
        prod_keys.append(parse_producer_key(_read_file(path, "--producer-key-file"), f"--producer-key-file {path[:60]}"))
        prod_src.append(f"--producer-key-file {path} (file)")
    return log_keys, log_src, prod_keys, prod_src


def _hex(value: str, n: int, what: str) -> bytes:
    v = value[2:] if value.lower().startswith("0x") else value
    if not re.fullmatch(rf"[0-9a-fA-F]{{{2 * n}}}", v):
        raise UsageError(f"{what} must be {n} bytes of hex (0x...)")
    return bytes.fromhex(v)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlhf-verify", description="Verify an rlhf-ledger proof bundle offline.")
    p.add_argument("bundle", help="the .rlhfbundle.jsonl file")
    p.add_argument("--chain-id", type=int, help="the chain the anchors must be on")
    p.add_argument("--contract", help="the anchor contract address (0x...)")
    p.add_argument("--trusted-block-hash", action="append", default=[], metavar="0x..",
                   help="a block hash you trust (from your own node, an explorer you trust, a finalized checkpoint); "
                        "an anchor in that block is confirmed")
    p.add_argument("--log-key", action="append", default=[], metavar="VKEY|@FILE",
                   help="optional pin: the log's verifier key, which must agree with the key the contract holds "
                        "(a value; @path reads it from a file)")
    p.add_argument("--log-key-file", action="append", default=[], metavar="FILE", help="optional log key pin from a file")
    p.add_argument("--producer-key", action="append", default=[], metavar="KEY|@FILE",
                   help="optional pin: only these producer keys are trusted (base64/hex value; @path reads a key file); "
                        "their registration and revocation are still judged by the log's key events")
    p.add_argument("--producer-key-file", action="append", default=[], metavar="FILE",
                   help="optional producer key pin from a file (raw base64/hex or JSON with public_key)")
    p.add_argument("--rules", help="compliance rule set: eu-ai-act@1, eu-ai-act@2, or eu-ai-act (the newest, @2)")
    p.add_argument("--weights", metavar="PATH",
                   help="a released .safetensors file or directory: its weights digest must equal the run's released_weights_digest")
    p.add_argument("--allow-unanchored", action="store_true",
                   help="with chain pins, do not require every event to be under a confirmed anchor")
    p.add_argument("--max-clock-skew", type=float, default=300.0, metavar="SECONDS",
                   help="how far an event time may lie after its anchor's block time (default 300)")
    p.add_argument("--max-delta", type=float, metavar="DELTA",
                   help="largest acceptable declared privacy delta (default: 1/records of the run's largest dataset)")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    p.add_argument("--html", metavar="OUT", help="write a self-contained HTML report")
    p.add_argument("--rpc", metavar="URL", help="check anchor blocks and the contract on a JSON-RPC node")
    p.add_argument("--min-confirmations", type=int, default=1)
    p.add_argument("--ipfs", metavar="URL", help="fetch each manifest by CID and check it")
    p.add_argument("--jobs", type=int, help="worker processes for event checks (default: all cores for large bundles)")
    p.add_argument("--no-progress", action="store_true")
    return p


def tlog_proof_main(argv: list[str]) -> int:
    from .tlogproof import TlogProofError, verify_tlog_proof

    p = argparse.ArgumentParser(prog="rlhf-verify tlog-proof", description="Check a c2sp.org/tlog-proof@v1 file.")
    p.add_argument("file")
    p.add_argument("--log-key", action="append", required=True, metavar="VKEY|@FILE")
    a = p.parse_args(argv)
    try:
        keys = [load_log_key(k) for k in a.log_key]
        text = Path(a.file).read_text(encoding="utf-8")
    except UsageError as e:
        print(f"rlhf-verify: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except (OSError, UnicodeDecodeError) as e:
        print(f"rlhf-verify: cannot read {a.file}: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        tp = verify_tlog_proof(text, keys)
    except TlogProofError as e:
        print(f"{a.file}: INVALID: {e}")
        return EXIT_INVALID
    print(f"{a.file}: VALID: entry {tp.index} is in {tp.checkpoint.origin} at size {tp.checkpoint.size}; "
          f"checkpoint signed by trusted key {tp.checkpoint.signed_by}")
    return EXIT_VALID


class Progress:
    """A progress bar on stderr for large bundles (only when stderr is a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled, self.last = enabled, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or total <= 0 or now - self.last < 0.2:
            return
        self.last = now
        frac = min(done / total, 1.0)
        bar = "#" * int(frac * 40)
        sys.stderr.write(f"\rverifying [{bar:<40}] {frac * 100:5.1f}%")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\r" + " " * 60 + "\r")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "tlog-proof":
            return tlog_proof_main(argv[1:])
        return _main(argv)
    except KeyboardInterrupt:
        print("rlhf-verify: interrupted", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except Exception as e:  # last resort: one line, never a traceback
        print(f"rlhf-verify: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN


def _main(argv: list[str]) -> int:
    from .report import render_html, render_json, render_text
    from .verify import CannotRun, Options, verify_file

    a = build_parser().parse_args(argv)
    try:
        log_keys, log_src, prod_keys, prod_src = trust_inputs(a)
        if not (a.trusted_block_hash or a.rpc or log_keys):
            raise UsageError("nothing to verify against: give the chain you trust (--chain-id, --contract and "
                             "--trusted-block-hash 0x.. or --rpc URL), or pin the log key (--log-key)")
        if not (a.max_clock_skew >= 0 and a.max_clock_skew < 1e9):
            raise UsageError("--max-clock-skew must be a number of seconds >= 0")
        if a.max_delta is not None and not 0 < a.max_delta < 1:
            raise UsageError("--max-delta must be in (0, 1)")
        opts = Options(
            log_keys=log_keys, log_key_sources=log_src,
            producer_key_sources=prod_src,
            allow_unanchored=a.allow_unanchored, max_clock_skew=a.max_clock_skew, max_delta=a.max_delta,
            producer_keys=prod_keys,
            chain_id=a.chain_id,
            contract=_hex(a.contract, 20, "--contract") if a.contract else None,
            trusted_block_hashes={_hex(h, 32, "--trusted-block-hash") for h in a.trusted_block_hash},
            rules=a.rules,
            jobs=a.jobs,
        )
        if a.rpc:
            from .online import OnlineError, RpcChecker
            try:
                checker = RpcChecker(a.rpc, a.min_confirmations)
                checker.probe()
                opts.online_block_check = checker
            except OnlineError as e:
                raise UsageError(str(e)) from None
    except UsageError as e:
        print(f"rlhf-verify: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    progress = Progress(not a.no_progress and sys.stderr.isatty())
    opts.progress = progress
    from .online import OnlineUnavailable

    try:
        result = verify_file(a.bundle, opts)
    except (CannotRun, OnlineUnavailable) as e:
        progress.close()
        print(f"rlhf-verify: {a.bundle}: cannot verify: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    progress.close()
    if a.rpc:
        result.trusted["rpc"] = f"{a.rpc} (block canonicality, >= {a.min_confirmations} confirmations, contract latest())"
    if a.ipfs:
        from .online import check_ipfs
        result.trusted["ipfs"] = f"{a.ipfs} (content checked against each CID; the gateway is not trusted)"
        for anc in result.anchors:
            try:
                err = check_ipfs(a.ipfs, anc["cid"])
            except OnlineUnavailable as e:
                print(f"rlhf-verify: {a.bundle}: cannot verify: {e}", file=sys.stderr)
                return EXIT_CANNOT_RUN
            if err:
                result.fail("anchor.ipfs", f"anchor of checkpoint {anc['checkpoint_size']}", err)
    if a.weights:
        from .weights import bind_weights

        try:
            bind_weights(result, a.weights)
        except OSError as e:
            print(f"rlhf-verify: cannot read --weights {a.weights}: {e.strerror or e}", file=sys.stderr)
            return EXIT_CANNOT_RUN
    if a.html:
        try:
            Path(a.html).write_text(render_html(result, a.bundle), encoding="utf-8")
        except OSError as e:
            print(f"rlhf-verify: cannot write {a.html}: {e.strerror}", file=sys.stderr)
            return EXIT_CANNOT_RUN
    sys.stdout.write(render_json(result, a.bundle) + "\n" if a.json else render_text(result, a.bundle))
    from .report.text import verdict

    return EXIT_VALID if verdict(result) == "valid" else EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
