"""Fork guard: a restored or lagging database never signs a checkpoint that contradicts the past.

The database is the log's working state, but it can be rolled back: restored from yesterday's
backup, or promoted from an asynchronous replica that had not replayed the last transactions.
What the log has already said to the world cannot be rolled back: checkpoints it signed (and
served) and roots anchored on chain. If the log signed a new checkpoint on top of a rolled-back
database, it would sign a second history that is inconsistent with the first (a fork; the C2SP
witness rule forbids it and CT logs have been retired for it).

So before signing, the ledger compares its tree with every *reference* it can read:

- the newest checkpoint it ever signed, recorded in a file outside the database
  (`PublishedCheckpoints`, `<data dir>/published/` or `$RLHF_PUBLISHED_DIR`), which a database
  restore does not touch;
- the newest (size, root) anchored on chain, through a witness the anchoring side provides
  (anchoring/fork_witness.py), when a chain is configured.

If a reference is larger than the database's tree (behind) or the database's tree at the
reference's size has another root (inconsistent), the log is *refused*: no checkpoint is signed
and no event is appended for it (an append would take an index of the missing tail and make the
fork permanent), until the missing events are re-appended (`rlhf-ledger recover`) and the tree
matches again. See docs/operations.md ("Restores and the fork guard").
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rlhf_ledger.core import merkle
from rlhf_ledger.core.errors import LedgerError

log = logging.getLogger(__name__)

PUBLISHED_DIR_ENV = "RLHF_PUBLISHED_DIR"


class SigningRefused(LedgerError):
    """The log's database is behind or inconsistent with what the log already published."""

    code = "signing_refused"


@dataclass(frozen=True)
class Reference:
    """A (size, root) the log has published, and where that fact was read."""

    size: int
    root: bytes
    source: str  # e.g. "published checkpoint file", "chain"


class Witness(Protocol):
    """A source of references that a database restore cannot roll back."""

    name: str

    def newest(self, log_id: str, origin: str, public_key: bytes) -> Reference | None: ...


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _safe(log_id: str) -> str:
    return log_id.replace("/", "_").replace(":", "_")


class PublishedCheckpoints:
    """The newest signed checkpoint of each log, one small JSON file per (log, log key).

    Kept outside the database on purpose. Writes only ever advance the size (under an
    exclusive flock, so several processes sharing the directory cannot move it back) and
    replace the file atomically. The file is keyed by the log key too: a log re-created with a
    new key is another log.
    """

    name = "published checkpoint file"

    def __init__(self, directory: Path | str):
        self.dir = Path(directory)

    def path(self, log_id: str, public_key: bytes) -> Path:
        return self.dir / f"{_safe(log_id)}.{public_key.hex()[:16]}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _load(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            # An unreadable record must not silently disable the guard.
            raise SigningRefused(f"cannot read the published-checkpoint record {path}: {e}", where=str(path)) from None

    def newest(self, log_id: str, origin: str, public_key: bytes) -> Reference | None:
        doc = self._load(self.path(log_id, public_key))
        if doc is None:
            return None
        return Reference(int(doc["size"]), base64.b64decode(doc["root"]), self.name)

    def record(self, log_id: str, public_key: bytes, size: int, root: bytes, note: str) -> bool:
        """Advance the record to (size, root); False if it already holds this size or more."""
        path = self.path(log_id, public_key)
        with self._locked():
            doc = self._load(path)
            if doc is not None and int(doc["size"]) >= size:
                return False
            tmp = path.with_suffix(".tmp")
            body = {"log_id": log_id, "size": size, "root": _b64(root), "note": note, "recorded_at": time.time()}
            with open(tmp, "w") as fh:
                json.dump(body, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return True


class ForkGuard:
    """Checks a log's tree against its references; remembers why a log is refused.

    `check()` is cheap enough to run before every checkpoint: each reference costs one read of
    at most log2(n) + 1 stored nodes. Chain witnesses cache their answer (see their ttl).
    """

    def __init__(self, published: PublishedCheckpoints | None, witnesses: list[Witness] | None = None):
        self.published = published
        self.witnesses: list[Witness] = list(witnesses or [])
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()

    def add_witness(self, witness: Witness) -> None:
        if all(w is not witness for w in self.witnesses):
            self.witnesses.append(witness)

    def _sources(self) -> list[Witness]:
        return ([self.published] if self.published is not None else []) + self.witnesses

    def references(self, log_id: str, origin: str, public_key: bytes) -> list[Reference]:
        refs = []
        for w in self._sources():
            try:
                r = w.newest(log_id, origin, public_key)
            except SigningRefused:
                raise
            except LedgerError as e:  # e.g. chain unreachable: the other references still count
                log.warning("fork guard %s: %s unavailable (%s)", log_id, w.name, e)
                continue
            if r is not None:
                refs.append(r)
        return refs

    def problem(self, log_id: str, origin: str, public_key: bytes, size: int, get: merkle.NodeGetter) -> str | None:
        """None if the tree of `size` (read through `get`) extends every reference; else why not."""
        for ref in self.references(log_id, origin, public_key):
            if ref.size > size:
                return (
                    f"log {log_id}: the database holds {size} entries but a checkpoint of size {ref.size} was "
                    f"already published ({ref.source}); the database was restored or lags: re-append the missing "
                    f"events with `rlhf-ledger recover` (docs/operations.md)"
                )
            if ref.size == 0:
                continue
            if merkle.root(ref.size, get) != ref.root:
                return (
                    f"log {log_id}: the database's tree at size {ref.size} has another root than the checkpoint "
                    f"published for that size ({ref.source}); the stored log is inconsistent with what was published"
                )
        return None

    def check(self, log_id: str, origin: str, public_key: bytes, size: int, get: merkle.NodeGetter) -> str | None:
        """Re-evaluate the log; remember (and log, once) a refusal, or clear it."""
        why = self.problem(log_id, origin, public_key, size, get)
        with self._lock:
            before = self._refused.get(log_id)
            if why is None:
                self._refused.pop(log_id, None)
            else:
                self._refused[log_id] = why
        if why is not None and why != before:
            log.error("refusing to sign: %s", why)
        elif why is None and before is not None:
            log.warning("log %s is consistent with every published checkpoint again; signing resumes", log_id)
        return why

    def before_sign(self, log_id: str, origin: str, public_key: bytes, size: int, get: merkle.NodeGetter) -> None:
        why = self.check(log_id, origin, public_key, size, get)
        if why is not None:
            raise SigningRefused(why, where=log_id)

    def refused(self, log_id: str) -> str | None:
        with self._lock:
            return self._refused.get(log_id)

    def refusals(self) -> dict[str, str]:
        with self._lock:
            return dict(self._refused)

    def record(self, log_id: str, public_key: bytes, size: int, root: bytes, note: str) -> None:
        if self.published is not None:
            self.published.record(log_id, public_key, size, root, note)


def default_published_dir(data_dir: Path) -> Path:
    return Path(os.environ.get(PUBLISHED_DIR_ENV) or (Path(data_dir) / "published"))
