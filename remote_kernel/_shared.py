"""One embedded cluster per machine and BURSTLAB_HOME: notebook processes share it, so a GPU is leased once.

The first notebook process that needs the embedded cluster starts it (in its own process, as before) and
writes ``BURSTLAB_HOME/embedded.json`` (0600): the scheduler's address, its pid and what GPUs it serves.
Another notebook process with the same ``BURSTLAB_HOME`` (so the same TLS certificates under ``tls/``)
finds it there and connects as a client instead of starting a second cluster: both lease from one
scheduler, so two notebooks never hold the same GPU. A lock file (``embedded.lock``, ``flock``) makes
"look, else start and publish" one step between processes.

A notebook joins only a cluster that serves the same GPUs (the same declaration), run by another live
process whose scheduler answers. The cluster lives in its first notebook's process: when that notebook
closes, it withdraws the file and its cluster stops; the other notebooks' sessions there end, and the
next call of each starts (or finds) a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from burstlab.errors import BurstlabError

STATE = "embedded.json"
LOCK = "embedded.lock"
LOCK_WAIT_S = 60.0  # another process starting the cluster holds the lock this long at most


@contextlib.contextmanager
def _locked(home: str, timeout: float = LOCK_WAIT_S):
    path = Path(home) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BurstlabError(f"Another notebook process has held {path} for {timeout:g} s while starting "
                                        "the embedded cluster. If none is starting, remove that file.") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, but not ours to join
        return True
    return True


def _answers(address: str, timeout: float = 1.0) -> bool:
    from distributed.comm import get_address_host_port

    try:
        host, port = get_address_host_port(address)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def find(home: str, serves: list[str]) -> str | None:
    """The address of another live process's embedded cluster under ``home`` serving ``serves``, or None."""
    try:
        state = json.loads((Path(home) / STATE).read_text())
    except (OSError, ValueError):
        return None
    pid, address = int(state.get("pid", 0)), str(state.get("address", ""))
    if pid == os.getpid() or not pid or not address or state.get("serves") != serves:
        return None
    if not _alive(pid) or not _answers(address):
        return None
    return address


def publish(home: str, address: str, serves: list[str]) -> None:
    path = Path(home) / STATE
    tmp = path.with_name(f".{STATE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"address": address, "pid": os.getpid(), "serves": serves, "started": time.time()}, f)
    os.replace(tmp, path)


def withdraw(home: str, address: str) -> None:
    """Remove the state file if it still names this process's cluster at ``address``."""
    path = Path(home) / STATE
    with contextlib.suppress(OSError, ValueError), _locked(home, timeout=5):
        state = json.loads(path.read_text())
        if state.get("pid") == os.getpid() and state.get("address") == address:
            path.unlink()


def join_or_start(home: str, serves: list[str], start) -> tuple[object | None, str | None]:
    """``(cluster, None)`` after starting one with ``start()`` (and publishing it), or ``(None, address)`` of
    the embedded cluster another notebook process runs for the same GPUs."""
    try:
        lock = _locked(home)
        lock.__enter__()
    except OSError:  # no lock file possible here (a read-only home): this notebook keeps its cluster to itself
        return start(), None
    try:
        address = find(home, serves)
        if address:
            return None, address
        cluster = start()
        try:
            publish(home, cluster.scheduler_address, serves)
        except OSError:  # the state file cannot be written: this notebook keeps its cluster to itself
            pass
        return cluster, None
    finally:
        lock.__exit__(None, None, None)


def serves(gpus) -> list[str]:
    """What an embedded cluster serves, as compared between processes: its GPUs."""
    return sorted(f"{g.host}/{g.type}/{g.index}/{g.source}" for g in gpus)


__all__ = ["find", "join_or_start", "publish", "serves", "withdraw"]
