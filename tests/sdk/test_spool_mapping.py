"""The journal writes through a shared mapping of its segment file (ledger/sdk/spool.py): what a
process that dies leaves behind (its reserved, NUL-filled space), a line torn by a crash in the
middle of its copy, growth past the reserved step, rotation, and the spool tools reading an
open segment. The SIGKILL-after-return case runs in tests/sdk/test_delivery.py."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import spool_tools
from rlhf_ledger.sdk.spool import ALLOC_STEP, Journal, valid_prefix

KEY = Signer.generate().key_id


def line(seq: int, pad: int = 0) -> bytes:
    return b'{"seq":%d,"type":"x.y","ts":"2026-01-01T00:00:00.000000Z","body":{"p":"%s"}}\n' % (seq, b"a" * pad)


def die_after(directory, n: int, pad: int = 0, segment_bytes: int | None = None) -> None:
    """A child process appends n lines and exits without closing the journal (as a crash would)."""
    code = textwrap.dedent(f"""
        import os, sys
        from rlhf_ledger.sdk.spool import Journal
        from tests.sdk.test_spool_mapping import line
        kw = {{}} if {segment_bytes!r} is None else {{"segment_bytes": {segment_bytes!r}}}
        j = Journal({str(directory)!r}, log_id="l", run_id="r", producer={KEY!r}, fsync="none", **kw)
        for i in range({n}):
            j.append(lambda s: line(s, {pad}))
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def segment_bytes_on_disk(directory) -> tuple[int, int]:
    [seg] = sorted(directory.glob("journal-*.jsonl"))
    data = seg.read_bytes()
    return len(data), len(valid_prefix(data))


def test_a_journal_whose_process_died_is_recovered_and_its_reserved_space_dropped(tmp_path):
    d = tmp_path / "sp"
    die_after(d, 3)
    size, valid = segment_bytes_on_disk(d)
    assert size >= ALLOC_STEP and valid == sum(len(line(i)) for i in range(3))  # reserved, NUL-filled tail
    st = spool_tools.status(d)  # the tools read a segment that was never closed
    assert (st.pending, st.last_seq) == (3, 2)
    j = Journal(d, log_id="l", run_id="r", producer=KEY)
    assert [json.loads(x)["seq"] for x in j.recovered.pending] == [0, 1, 2]
    j.append(line)
    j.close()
    assert segment_bytes_on_disk(d) == (valid + len(line(3)),) * 2  # closed: cut to its lines
    j = Journal(d, log_id="l", run_id="r", producer=KEY)
    assert [json.loads(x)["seq"] for x in j.recovered.pending] == [0, 1, 2, 3]
    j.close()


def test_a_line_torn_by_a_crash_in_its_copy_is_dropped(tmp_path):
    d = tmp_path / "sp"
    die_after(d, 2)
    [seg] = sorted(d.glob("journal-*.jsonl"))
    data = bytearray(seg.read_bytes())
    valid = len(valid_prefix(bytes(data)))
    torn = line(2)[:20]
    data[valid:valid + len(torn)] = torn  # the copy stopped mid-line; the rest is still NUL
    seg.write_bytes(bytes(data))
    j = Journal(d, log_id="l", run_id="r", producer=KEY)
    assert len(j.recovered.pending) == 2 and j.next_seq == 2
    assert j.append(line)[0] == 2
    j.close()
    assert [json.loads(x)["seq"] for x in seg.read_bytes().splitlines()] == [0, 1, 2]


def test_lines_past_the_reserved_step_and_across_segments_all_come_back(tmp_path):
    d = tmp_path / "sp"
    n, pad = 300, 10_000  # about 3 MB: the mapping grows past ALLOC_STEP several times
    die_after(d, n, pad, segment_bytes=1_200_000)
    assert len(list(d.glob("journal-*.jsonl"))) >= 2
    j = Journal(d, log_id="l", run_id="r", producer=KEY, segment_bytes=1_200_000)
    assert [json.loads(x)["seq"] for x in j.recovered.pending] == list(range(n))
    assert all(x == line(i, pad) for i, x in enumerate(j.recovered.pending))
    for _ in range(5):
        j.append(lambda s: line(s, pad))
    j.close()
    j = Journal(d, log_id="l", run_id="r", producer=KEY, segment_bytes=1_200_000)
    assert j.next_seq == n + 5 and len(j.recovered.pending) == n + 5
    j.close()
    for seg in d.glob("journal-*.jsonl"):
        assert b"\0" not in seg.read_bytes()


def test_a_line_longer_than_the_reserved_step_is_written_whole(tmp_path):
    d = tmp_path / "sp"
    j = Journal(d, log_id="l", run_id="r", producer=KEY)
    big = ALLOC_STEP + 12_345
    j.append(lambda s: line(s, big))
    j.append(line)
    j.close()
    j = Journal(d, log_id="l", run_id="r", producer=KEY)
    assert [len(x) for x in j.recovered.pending] == [len(line(0, big)), len(line(1))]
    j.close()


def test_platforms_without_posix_fallocate_write_lines_and_both_kinds_read_each_other(tmp_path):
    """Where blocks cannot be reserved (macOS), each line goes through os.write; a spool written
    either way opens the other way, lines intact and seqs continuing."""
    d = tmp_path / "sp"
    j = Journal(d, log_id="l", run_id="r", producer=KEY, mapped=False)
    assert j.mapped is False
    for _ in range(3):
        j.append(line)
    assert segment_bytes_on_disk(d)[0] == sum(len(line(i)) for i in range(3))  # no reserved space
    j.close()
    j = Journal(d, log_id="l", run_id="r", producer=KEY, mapped=True)
    assert len(j.recovered.pending) == 3
    j.append(line)
    j.close()
    j = Journal(d, log_id="l", run_id="r", producer=KEY, mapped=False)
    assert [json.loads(x)["seq"] for x in j.recovered.pending] == [0, 1, 2, 3]
    j.append(line)
    j.close()
    [seg] = sorted(d.glob("journal-*.jsonl"))
    assert seg.read_bytes() == b"".join(line(i) for i in range(5))


@pytest.fixture
def full_disk(tmp_path):
    """A 4 MiB tmpfs: a real filesystem that runs out of space (needs root to mount)."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_an_error_on_the_call_never_a_sigbus_and_the_spool_still_opens(full_disk):
    """In a child (a SIGBUS would kill it, not the test run): append until the filesystem is full.
    The call that does not fit raises ENOSPC and writes nothing; every earlier line is recovered;
    the spool opens again on the still-full disk (its events can be delivered)."""
    code = textwrap.dedent(f"""
        import json
        from rlhf_ledger.sdk.spool import Journal
        from tests.sdk.test_spool_mapping import line
        d = {str(full_disk / "sp")!r}
        j = Journal(d, log_id="l", run_id="r", producer={KEY!r})
        n = 0
        try:
            while True:
                j.append(lambda s: line(s, 10_000))
                n += 1
        except OSError as e:
            err = e.errno
        try:
            j.append(lambda s: line(s, 10_000))
        except OSError as e:
            again = e.errno
        j.close()
        j = Journal(d, log_id="l", run_id="r", producer={KEY!r})
        print(json.dumps({{"written": n, "errno": err, "again": again, "recovered": len(j.recovered.pending),
                          "next": j.next_seq}}))
        j.close()
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr)  # -7 would be SIGBUS
    out = json.loads(p.stdout)
    assert out["errno"] == out["again"] == errno.ENOSPC and out["written"] > 100
    assert out["recovered"] == out["next"] == out["written"]
