"""A ledger write that fails never leaves the world different from the ledger.

On a real full disk (a small tmpfs, filled) and with a real PostgreSQL server stopped mid-session:
a stop still releases the GPUs and its close is journaled, then written exactly once when the
ledger takes writes again; a new session is refused with the reason and holds nothing; a process
killed with closes pending leaves them for the next ledger to replay at their exact stop times.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import burstlab
from burstlab.billing import Meter, RateCard, open_ledger
from burstlab.billing.journal import read_entries
from burstlab.errors import LedgerError
from waiting import wait_for as _wait  # tests/waiting.py

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs (a disk that fills) needs root")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs; yields (mount point, fill(), free())."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)], check=True)
    filler = mnt / "filler"

    def fill():
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    os.write(fd, b"\0" * 65536)
                except OSError:
                    break
            with pytest.raises(OSError):  # really full: not even one more block
                os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)

    def free():
        filler.unlink(missing_ok=True)

    try:
        yield mnt, fill, free
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)




def _free_h100(ws) -> int:
    return sum(e.free for e in ws.hosts() if e.type == "H100")


def _journal_entries(directory: Path) -> list[dict]:
    return [e for p in directory.glob("*.journal") for _, e in read_entries(p)[1]]


def _fault_cycle(ws, break_ledger, mend_ledger, reason: str, journal_dir: Path):
    """Session, ledger breaks, stop, refused start, ledger mends: the shared script of both faults."""
    total = _free_h100(ws)
    s = ws.session("H100")
    assert s.execute_sync("x = 41 + 1").error is None
    held_from = time.time_ns()
    break_ledger()
    ws.stop("H100")  # no raise: the GPU is released whatever the ledger says
    held_to = time.time_ns()
    assert s.state == "stopped" and _free_h100(ws) == total
    assert s.interval_id in ws.meter.pending()  # (the watcher may journal a worker's up-time beside it)
    (entry,) = [e for e in _journal_entries(journal_dir) if e["id"] == s.interval_id]  # on disk, disk full or not
    assert entry["id"] == s.interval_id and held_from <= entry["stop_ns"] <= held_to

    with pytest.raises(LedgerError, match=re.escape(f"is not writable: {reason}")):
        ws.session("H100")
    assert _free_h100(ws) == total and not [x for x in ws.sessions.values() if x.state == "running"]

    mend_ledger()
    record = _wait(lambda: (r := ws.ledger.get(s.interval_id)) and r.stop_ns is not None and r, 30,
                   "the journaled stop to be written")
    assert record.stop_ns == entry["stop_ns"] and record.detail.get("lost") is None
    assert record.billed_s <= (held_to - record.start_ns) / 1e9 + 1  # not billed until the ledger came back
    assert ws.meter.pending() == [] and _journal_entries(journal_dir) == []
    assert ws.meter.settle() == 0  # exactly once
    again = ws.session("H100")  # and the ledger works again
    again.stop("done")
    assert ws.ledger.get(again.interval_id).stop_ns is not None


@needs_root
def test_full_disk_stop_releases_the_gpu_and_is_written_once_when_space_returns(tmp_path, small_disk):
    mnt, fill, free = small_disk
    ws = burstlab.Workspace(home=str(tmp_path / "home"), ledger_url=f"sqlite:///{mnt}/ledger.sqlite",
                            kernel_pool_size=0, heartbeat_interval=0.2, notebook="fulldisk.ipynb")
    try:
        _fault_cycle(ws, fill, free, "disk full", mnt / "journal")
    finally:
        ws.close()


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else (Path(shutil.which("pg_ctl")).parent if shutil.which("pg_ctl") else None)


@pytest.fixture(scope="module")
def _postgres_server():
    """A PostgreSQL server of this module's own (tests stop and start it again)."""
    if _postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)")
    directory = Path(tempfile.mkdtemp(prefix="burstlab-test-pg-"))  # outside pytest's root-only tmp_path
    url = subprocess.run([str(ROOT / ".ci/postgres"), "start", str(directory)], check=True, capture_output=True,
                         text=True, timeout=120).stdout.strip()
    port = url.rsplit(":", 1)[1].split("/")[0]
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pg_ctl = as_pg + [str(_postgres_bin() / "pg_ctl"), "-D", str(directory / "data"), "-w"]

    running = [True]

    def stop():
        subprocess.run(pg_ctl + ["-m", "immediate", "stop"], check=True, capture_output=True, timeout=60)
        running[0] = False

    def start():
        subprocess.run(pg_ctl + ["-l", str(directory / "server.log"), "-o",
                                 f"-p {port} -k {directory} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=60)
        running[0] = True

    try:
        yield url, stop, start, running
    finally:
        subprocess.run([str(ROOT / ".ci/postgres"), "stop", str(directory)], check=False, capture_output=True,
                       timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_postgres(_postgres_server):
    """``(url, stop, start)`` of the module's server, running at the start of each test."""
    url, stop, start, running = _postgres_server
    if not running[0]:
        start()
    yield url, stop, start


def test_postgres_stopped_mid_session(tmp_path, own_postgres):
    url, stop, start = own_postgres
    home = tmp_path / "home"
    ws = burstlab.Workspace(home=str(home), ledger_url=url, kernel_pool_size=0, heartbeat_interval=0.2,
                            notebook="pgdown.ipynb")
    try:
        _fault_cycle(ws, stop, start, "the server does not answer", home / "journal")
    finally:
        ws.close()


@needs_root
def test_closes_journaled_by_a_killed_process_are_replayed_exactly(tmp_path, small_disk):
    mnt, fill, free = small_disk
    code = textwrap.dedent(f"""
        import os, sys, time
        from burstlab.billing import Meter, RateCard, open_ledger
        ledger = open_ledger("sqlite:///{mnt}/ledger.sqlite")
        meter = Meter(ledger, RateCard.from_config({{}}), heartbeat_s=0)
        kept = meter.start(kind="session", user="u", notebook="n", resource="H100")
        other = meter.start(kind="session", user="u", notebook="n", resource="H100")
        with open("{mnt}/filler", "wb") as f:
            try:
                while True:
                    f.write(b"\\0" * 65536); f.flush()
            except OSError:
                pass
        record = meter.stop(kept)
        print(kept, record.stop_ns, other, meter.pending(), flush=True)
        time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        kept, stop_ns, other, pending = child.stdout.readline().split(" ", 3)
        assert kept in pending
    finally:
        child.kill()
        child.wait(10)
    free()
    ledger = open_ledger(f"sqlite:///{mnt}/ledger.sqlite")
    closed = ledger.recover()
    assert set(closed) == {kept, other}
    exact, orphan = ledger.get(kept), ledger.get(other)
    assert exact.stop_ns == int(stop_ns) and exact.detail["journaled"] and not exact.recovered
    assert orphan.recovered and orphan.stop_ns == orphan.heartbeat_ns  # no journal: its last heartbeat
    assert list((mnt / "journal").glob("*.journal")) == []
    assert ledger.recover() == []
    ledger.close()


def test_an_open_the_ledger_refuses_names_the_ledger_and_why(tmp_path):
    path = tmp_path / "ro" / "ledger.sqlite"
    ledger = open_ledger(str(path))
    meter = Meter(ledger, RateCard.from_config({}), heartbeat_s=0)
    kept = meter.start(kind="session", user="u", notebook="n", resource="H100")
    ledger.db.execute("PRAGMA query_only = ON")  # the database refuses writes from here on
    with pytest.raises(LedgerError, match=rf"The ledger at {re.escape(str(path))} is not writable: read-only"):
        meter.start(kind="session", user="u", notebook="n", resource="H100", id=uuid.uuid4().hex)
    record = meter.stop(kept)  # journaled, priced from memory
    assert record.stop_ns is not None and meter.pending() == [kept]
    ledger.db.execute("PRAGMA query_only = OFF")
    assert meter.settle() == 1 and meter.settle() == 0
    assert ledger.get(kept).stop_ns == record.stop_ns
    meter.close()
    assert list((tmp_path / "ro" / "journal").glob("*")) == []


def _slow(x):
    time.sleep(0.25)
    return x * 3


def test_postgres_stopped_mid_map(tmp_path, own_postgres):
    """The map finishes; its worker's close is journaled and written, at its exact time, when the server is back."""
    import threading

    from burstlab import fanout

    url, stop, start = own_postgres
    home = tmp_path / "home"
    ws = burstlab.Workspace(home=str(home), ledger_url=url, kernel_pool_size=0, heartbeat_interval=0.2,
                            notebook="pgmap.ipynb")
    try:
        out: dict = {}
        thread = threading.Thread(target=lambda: out.setdefault(
            "result", fanout.map(_slow, range(16), gpu="A100", workspace=ws, progress=False)))  # one A100: one worker
        thread.start()
        (interval,) = _wait(lambda: [r.id for r in ws.meter.open_records() if r.kind == "map"], 60,
                            "the map's worker interval to open")
        stop()
        thread.join(60)
        assert out.get("result") == [x * 3 for x in range(16)]
        assert interval in ws.meter.pending()
        (entry,) = [e for e in _journal_entries(home / "journal") if e["id"] == interval]
        start()
        record = _wait(lambda: (r := ws.ledger.get(interval)) and r.stop_ns is not None and r, 30,
                       "the journaled close to be written")
        assert record.stop_ns == entry["stop_ns"] and record.detail["inputs"] == 16
        assert record.billed_s >= 4 * 0.25  # sixteen quarter-second inputs on one worker
        assert ws.meter.settle() == 0 and interval not in ws.meter.pending()
    finally:
        ws.close()
