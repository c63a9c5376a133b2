"""The on-disk spool: a write-ahead journal of a producer's events for one run (docs/sdk.md).

Layout of a spool directory (one per log, run and producer):

* ``meta.json``            -- {"format", "log_id", "run_id", "producer"}; a spool never mixes runs/keys.
* ``journal-<seq>.jsonl``  -- segments, named by the seq of their first record, append-only.
  One JSON line per event, *unsigned*: {"seq", "type", "ts", "body"[, "openings"[, "subjects"]]}.
* ``acked.json``           -- {"seq", "hash"}: the last event the ledger acknowledged and its event
  hash (replaced atomically). Segments whose records are all acknowledged are deleted.
* ``deadletter.jsonl``     -- batches the ledger refused for good, with the problem it gave.
* ``lock``                 -- held (flock, exclusive) by the one process that has the spool open;
  it holds that process's pid. A second opener is refused at once: two writers of one journal
  would assign the same seqs to different events (a fork the ledger then refuses).

Why unsigned lines are enough: the signed envelope is a pure function of the line, the
producer key and the previous event's hash (``seq`` is in the line, ``prev`` is the hash of
the previous line's event, and Ed25519 signatures are deterministic, RFC 8032). Replaying the
journal after a crash therefore rebuilds byte-identical envelopes with the same event ids, and
the ledger's idempotent append makes re-submission safe.

Durability: :meth:`Journal.append` copies the whole line into a shared memory mapping of the
segment file before it returns, so the line is in the kernel page cache and survives any crash
of the training process (SIGKILL included). Power loss is covered only up to the last fsync:
mode ``"always"`` fsyncs inside append; ``"batch"`` lets the sender fsync (group commit) before
each delivery and at least every ``fsync_interval`` seconds; ``"none"`` leaves it to the OS.

Why a mapping rather than ``os.write``: a write system call releases the GIL, and getting it
back means waiting for whichever thread took it meanwhile (the sender, canonicalising and
signing); that wait, not the write, was most of the training thread's cost per event. Copying
into the mapping holds the GIL throughout. The file's blocks are reserved with
``posix_fallocate`` before the mapping covers them (a full disk is an OSError on the training
thread, never a SIGBUS), in steps of ``ALLOC_STEP``; a segment that was not closed (the
process died) therefore ends in NUL bytes after its last line, which recovery and the spool
tools drop (a JSON line never contains a NUL byte).
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_ledger.core.errors import LedgerError

SPOOL_FORMAT = "rlhf-ledger-spool/v1"
FSYNC_MODES = ("always", "batch", "none")
_SEG_RE = re.compile(r"^journal-(\d{12})\.jsonl$")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
ALLOC_STEP = 1024 * 1024  # reserve and map a segment's file in steps of this many bytes
MAPPING_AVAILABLE = hasattr(os, "posix_fallocate")


def valid_prefix(data: bytes) -> bytes:
    """A segment's bytes without the NUL fill after its last line (a segment its writer did not
    close: the reserved, never written part of its file)."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


class SpoolError(LedgerError):
    code = "spool_error"


class SpoolLockedError(SpoolError):
    """Another process (or another Run in this one) has this spool open."""

    code = "spool_locked"


def read_meta(directory: str | os.PathLike) -> dict:
    """A spool's meta.json (log_id, run_id, producer), or SpoolError saying why not."""
    p = Path(directory) / "meta.json"
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError:
        raise SpoolError("not a spool directory (no meta.json)", where=str(directory)) from None
    except (OSError, ValueError) as e:
        raise SpoolError(f"unreadable spool metadata: {e}", where=str(p)) from None
    if not isinstance(meta, dict) or meta.get("format") != SPOOL_FORMAT or not all(
            isinstance(meta.get(k), str) for k in ("log_id", "run_id", "producer")):
        raise SpoolError(f"not a {SPOOL_FORMAT} spool", where=str(p))
    return meta


def lock_holder(directory: str | os.PathLike) -> int | None:
    """The pid holding the spool's lock, or None when nobody has it open (does not take it)."""
    p = Path(directory) / "lock"
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.pread(fd, 32, 0).decode().strip() or 0) or -1
            except ValueError:
                return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _take_lock(directory: Path) -> int:
    p = directory / "lock"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode().strip() or "?"
        finally:
            os.close(fd)
        me = " (this process)" if holder == str(os.getpid()) else ""
        raise SpoolLockedError(
            f"spool is in use by process {holder}{me}; one process writes a producer's chain. Under torchrun/"
            "accelerate/DeepSpeed only rank 0 records the run (the default); a rank that records rank-local "
            "facts needs its own key (RankRecorder). To deliver a crashed run's leftovers, stop the other "
            "process first (rlhf-ledger spool status shows the holder)",
            where=str(directory),
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _seg_name(first_seq: int) -> str:
    return f"journal-{first_seq:012d}.jsonl"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, obj: Any, *, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(obj, sort_keys=True) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Recovered:
    """What a spool holds on open: the last acknowledged event and the records after it."""

    acked_seq: int  # -1 when nothing was acknowledged
    acked_hash: str | None
    pending: list[bytes]  # journal lines (with trailing newline) of records with seq > acked_seq
    next_seq: int
    types_seen: frozenset[str]  # event types in the journal or acknowledged (for resume decisions)


class Journal:
    """Append-only, segment-rotated journal of unsigned event records.

    ``append`` is called on the training thread(s); it assigns ``seq`` under a lock so that file
    order equals seq order, writes one line with a single ``os.write`` and returns.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        log_id: str,
        run_id: str,
        producer: str,
        fsync: str = "batch",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        trim_bytes: int = 1024 * 1024,
        mapped: bool | None = None,
    ):
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {FSYNC_MODES}, got {fsync!r}")
        self.dir = Path(directory)
        self.fsync_mode = fsync
        self.segment_bytes = segment_bytes
        self.trim_bytes = trim_bytes  # a fully acknowledged current segment this large is rotated away
        # Without posix_fallocate (macOS) blocks cannot be reserved ahead of a mapping, and a full
        # disk under a mapping is a SIGBUS: there each line is written with os.write instead.
        self.mapped = MAPPING_AVAILABLE if mapped is None else mapped
        if self.mapped and not MAPPING_AVAILABLE:
            raise ValueError("a mapped journal needs os.posix_fallocate, which this platform lacks")
        self._lock = threading.Lock()
        self._timer: threading.Thread | None = None
        self._timer_stop = threading.Event()
        self.synced_seq = -1  # last seq known fsynced
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = _take_lock(self.dir)  # before reading anything: we are the only writer
        try:
            self._init_files(log_id, run_id, producer, fsync)
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise

    def _init_files(self, log_id: str, run_id: str, producer: str, fsync: str) -> None:
        meta = {"format": SPOOL_FORMAT, "log_id": log_id, "run_id": run_id, "producer": producer}
        meta_path = self.dir / "meta.json"
        if meta_path.exists():
            try:
                found = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise SpoolError(f"unreadable spool metadata: {e}", where=str(meta_path)) from None
            if found != meta:
                raise SpoolError(
                    f"spool belongs to {found.get('log_id')}/{found.get('run_id')} producer "
                    f"{str(found.get('producer'))[:16]}..., not this run; use another spool_dir",
                    where=str(meta_path),
                )
        else:
            _atomic_write_json(meta_path, meta, fsync=fsync != "none")
        self.recovered = self._recover()
        self._seq = self.recovered.next_seq
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._seg_first = -1
        self._seg_size = 0
        self._alloc = 0
        self._open_segment(self._seq)

    # --- recovery ---------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.iterdir():
            m = _SEG_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def read_acked(self) -> tuple[int, str | None]:
        p = self.dir / "acked.json"
        if not p.exists():
            return -1, None
        try:
            doc = json.loads(p.read_text())
            return int(doc["seq"]), str(doc["hash"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SpoolError(f"unreadable acknowledgement state: {e}", where=str(p)) from None

    def _recover(self) -> Recovered:
        acked_seq, acked_hash = self.read_acked()
        acked_types = set(self._read_types_file())
        pending: list[bytes] = []
        types: set[str] = set(acked_types)
        expect: int | None = None
        segs = self.segments()
        for i, (_first, path) in enumerate(segs):
            raw_data = path.read_bytes()
            data = valid_prefix(raw_data)  # without the NUL fill of a segment whose writer died
            lines = data.split(b"\n")
            tail = lines.pop()  # b"" when the file ends with a newline
            # A torn last line comes from power loss mid-write or from a process killed in the
            # middle of its copy into the mapping: that call never returned, or returned without
            # the line being durable on disk.
            if tail and i != len(segs) - 1:
                raise SpoolError("torn record in a non-final segment", where=str(path))
            if len(data) - len(tail) != len(raw_data):  # cut the file to its last whole line
                with open(path, "r+b") as f:
                    f.truncate(len(data) - len(tail))
            for ln, raw in enumerate(lines, 1):
                try:
                    rec = json.loads(raw)
                    seq = rec["seq"]
                    types.add(rec["type"])
                except (ValueError, KeyError, TypeError) as e:
                    raise SpoolError(f"malformed journal record: {e}", where=f"{path}:{ln}") from None
                if expect is not None and seq != expect:
                    raise SpoolError(f"journal seq {seq} does not follow {expect - 1}", where=f"{path}:{ln}")
                expect = seq + 1
                if seq > acked_seq:
                    pending.append(raw + b"\n")
        if pending:
            first_pending = json.loads(pending[0])["seq"]
            if first_pending != acked_seq + 1:
                raise SpoolError(
                    f"journal resumes at seq {first_pending} but the last acknowledged seq is {acked_seq}",
                    where=str(self.dir),
                )
        next_seq = max(acked_seq + 1, expect or 0)
        return Recovered(acked_seq, acked_hash, pending, next_seq, frozenset(types))

    def _read_types_file(self) -> list[str]:
        p = self.dir / "acked.json"
        if not p.exists():
            return []
        try:
            return list(json.loads(p.read_text()).get("types", []))
        except (OSError, ValueError):
            return []

    # --- appending (training thread) --------------------------------------------------------

    def _open_segment(self, first_seq: int) -> None:
        segs = self.segments()
        if segs and self._fd < 0:
            # continue the last segment after recovery
            first, path = segs[-1]
        else:
            first, path = first_seq, self.dir / _seg_name(first_seq)
        # Mapped or not, opening reserves nothing: a spool on a full disk still opens, so that
        # what it holds can be delivered (`rlhf-ledger spool flush`). Space is reserved by the
        # first line that needs it (_grow).
        flags = os.O_RDWR | os.O_CREAT if self.mapped else os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = os.open(path, flags, 0o600)
        size = os.fstat(fd).st_size  # recovery cut it to its last whole line
        if self.fsync_mode != "none":
            _fsync_dir(self.dir)  # the new name itself must survive
        self._close_segment()
        self._fd, self._mm, self._seg_first, self._seg_size, self._alloc = fd, None, first, size, size

    def _grow(self, end: int) -> None:
        """Reserve blocks up to at least `end` (OSError on a full disk, nothing written), then
        map them."""
        new = max(end, self._alloc + ALLOC_STEP)
        os.posix_fallocate(self._fd, self._alloc, new - self._alloc)
        if self._mm is None:
            self._mm = mmap.mmap(self._fd, new, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        else:
            self._mm.resize(new)
        self._alloc = new

    def _close_segment(self) -> None:
        """Unmap the current segment, cut its file to the lines written, fsync and close it."""
        if self._fd < 0:
            return
        if self._mm is not None:
            self._mm.close()  # the written pages stay in the page cache
            self._mm = None
        if self.mapped:
            os.ftruncate(self._fd, self._seg_size)  # drop what was reserved and not written
        if self.fsync_mode != "none":
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1

    def append(self, encode_line) -> tuple[int, bytes]:
        """Assign the next seq, write ``encode_line(seq)`` (bytes ending in newline), return both."""
        with self._lock:
            seq = self._seq
            line = encode_line(seq)
            if self._seg_size >= self.segment_bytes:
                self._open_segment(seq)
            if not self.mapped:  # MAPPING_AVAILABLE
                n = os.write(self._fd, line)
                while n < len(line):  # regular files do not short-write in practice; be correct anyway
                    n += os.write(self._fd, line[n:])
                self._seg_size += len(line)
            else:
                start = self._seg_size
                end = start + len(line)
                if end > self._alloc:
                    self._grow(end)
                assert self._mm is not None
                self._mm[start:end] = line  # holds the GIL: no system call (module docstring)
                self._seg_size = end
            if self.fsync_mode == "always":
                os.fsync(self._fd)
            self._seq = seq + 1
            return seq, line

    @property
    def next_seq(self) -> int:
        return self._seq

    def sync(self) -> None:
        """fsync the current segment (group commit for mode "batch"): covers every line written so far.

        The descriptor is duplicated under the lock and fsynced outside it, so appends on the
        training thread never wait for the disk. fsync of the file also writes the pages changed
        through the mapping (Linux has one page cache for both); msync would hold the GIL.
        """
        if self.fsync_mode == "none":
            return
        with self._lock:
            if self._fd < 0:
                return
            fd, covered = os.dup(self._fd), self._seq - 1
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.synced_seq = max(self.synced_seq, covered)

    def start_sync_timer(self, interval: float) -> None:
        """Mode "batch": a small thread fsyncs at most ``interval`` seconds after a line is written,
        however far behind the sender is (fsync releases the GIL)."""
        if self.fsync_mode != "batch" or self._timer is not None:
            return

        def loop() -> None:
            while not self._timer_stop.wait(interval):
                if self._seq - 1 > self.synced_seq:
                    try:
                        self.sync()
                    except OSError:
                        pass  # closed under us at shutdown; close() fsyncs itself

        self._timer = threading.Thread(target=loop, name="rlhf-ledger-spool-fsync", daemon=True)
        self._timer.start()

    # --- acknowledgement and trimming (sender thread) ---------------------------------------

    def mark_acked(self, seq: int, event_hash: str, types: set[str]) -> None:
        """Record the last acknowledged event, then delete segments holding only acked records."""
        _atomic_write_json(self.dir / "acked.json", {"seq": seq, "hash": event_hash, "types": sorted(types)}, fsync=False)
        with self._lock:
            if self._fd >= 0 and seq == self._seq - 1 and self._seg_size >= self.trim_bytes:
                self._open_segment(self._seq)  # everything is acked: start afresh so the old one can go
            current = self._seg_first
        segs = self.segments()
        for i, (first, path) in enumerate(segs[:-1]):
            nxt = segs[i + 1][0]
            if nxt - 1 <= seq and first != current:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

    def dead_letter(self, record: dict) -> Path:
        p = self.dir / "deadletter.jsonl"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return p

    def close(self, *, acked_seq: int | None = None) -> None:
        """Close the journal; when ``acked_seq`` shows everything acknowledged, delete the segments."""
        self._timer_stop.set()
        if self._timer is not None:
            self._timer.join()
        with self._lock:
            self._close_segment()
            if acked_seq is not None and acked_seq == self._seq - 1:
                for _, path in self.segments():
                    path.unlink()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1
