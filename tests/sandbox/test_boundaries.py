"""The supervisor's side of the boundary, attacked from inside a real sandbox (issue 12): the ipc
sockets it connects to, the output it buffers whatever its shape, and the kernel's own log file."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import Sandbox
from burstlab.sandbox._client import open_socket
from burstlab.sandbox._sandbox import LOG_SIZE


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class HostSocket:
    """A unix socket listener on the host that records every connection it gets."""

    def __init__(self) -> None:
        self.path = f"/tmp/blt-host-{uuid.uuid4().hex[:8]}.sock"
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            c.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()
        os.unlink(self.path)


@pytest.fixture
def host_socket():
    h = HostSocket()
    yield h
    h.close()


def test_open_socket_refuses_symlinks_files_and_foreign_sockets(tmp_path, host_socket):
    link = tmp_path / "k-1"
    link.symlink_to(host_socket.path)
    with pytest.raises(SandboxError, match="symlink"):
        open_socket(str(link), None)
    plain = tmp_path / "k-2"
    plain.write_text("x")
    with pytest.raises(SandboxError, match="not a socket"):
        open_socket(str(plain), None)
    with pytest.raises(SandboxError, match="socket of uid 0"):
        open_socket(host_socket.path, 1_234_567)  # root's socket, not the sandbox uid's
    os.close(open_socket(host_socket.path, 0))
    assert host_socket.connections == 0


# Inside the sandbox: swap every ipc socket path for a symlink to the host's socket, then cut the
# kernel's side of every connection, so that a supervisor connecting by path would reconnect through it.
SWAP = """
import os, socket, stat, threading
run = "/run/burstlab"
cut = 0

def swap():
    global cut
    for name in os.listdir(run):
        if name.startswith("k-"):
            os.unlink(os.path.join(run, name))
            os.symlink({target!r}, os.path.join(run, name))
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode):
            s = socket.socket(fileno=os.dup(fd))
            try:
                s.getpeername()  # raises for a listener: only accepted connections are cut
                if s.family == socket.AF_UNIX and str(s.getsockname()).startswith(run):
                    s.shutdown(socket.SHUT_RDWR)
                    cut += 1
            except OSError:
                pass
            finally:
                s.close()

threading.Timer(0.2, swap).start()  # after this cell's reply has gone out
"""


def test_a_symlinked_ipc_socket_never_leads_the_supervisor_to_a_host_socket(host_socket):
    with Sandbox(timeout=10) as sb:
        assert sb.run("1").error is None
        assert sb.run(SWAP.format(target=host_socket.path), timeout=5).error is None
        run_dir = os.path.join(sb.state_dir, "fs", "run")
        deadline = time.monotonic() + 5
        while not os.path.islink(os.path.join(run_dir, "k-4")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.islink(os.path.join(run_dir, "k-1"))  # the trap is set
        time.sleep(1.0)  # the supervisor's sockets retry every 10 ms: this is ~100 chances to walk into it
        assert host_socket.connections == 0
        # the kernel's side of shell, control and iopub was cut, and the supervisor came back to the kernel
        assert int(sb.run("cut").outputs[0].data["text/plain"]) >= 3
        # control: connecting by path, as the supervisor used to, does reach the host's socket
        c = socket.socket(socket.AF_UNIX)
        c.connect(os.path.join(run_dir, "k-1"))
        c.close()
        deadline = time.monotonic() + 5
        while host_socket.connections < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host_socket.connections == 1
        sb.restart()  # a fresh kernel binds fresh sockets; the symlinks are cleared first
        assert sb.run("40 + 2").outputs[0].data["text/plain"] == "42"
        assert host_socket.connections == 1


def _kept_bytes(r) -> int:
    return sum(len(o.text) + len(repr(o.data)) + len(repr(o.metadata)) for o in r.outputs)


FLOOD_METADATA = """
from IPython.display import publish_display_data
for i in range(40):
    publish_display_data({'text/plain': 'x'}, metadata={'p': 'A' * 3 * 2**20})
sent = i + 1
"""

# The same floods, sent with Session's own send (the kernel's counting wrapper is an instance
# attribute, so the class's method bypasses it): only the supervisor's count stands between them and us.
FLOOD_BYPASS = """
from jupyter_client.session import Session
k = get_ipython().kernel
parent = k.get_parent("shell")
for i in range(25):
    Session.send(k.session, k.iopub_socket, {kind!r}, {content}, parent=parent)
sent = i + 1
"""


# Pre-signed frames pushed straight at the iopub socket: as fast as the sandbox can send (~250 MiB).
FLOOD_RAW = """
k = get_ipython().kernel
msg = k.session.msg("display_data", {"data": {"text/plain": "x"}, "metadata": {"p": "A" * 4 * 2**20}},
                    parent=k.get_parent("shell"))
frames = k.session.serialize(msg)
for i in range(60):
    k.iopub_socket.send_multipart(frames)
sent = i + 1
"""


@pytest.mark.parametrize("code", [
    FLOOD_METADATA,
    FLOOD_BYPASS.format(kind="display_data", content="{'data': {'text/plain': 'x'}, 'metadata': {'p': 'A' * 3 * 2**20}}"),
    FLOOD_BYPASS.format(kind="display_data", content="{'data': {'application/json': {'v': ['B' * 3 * 2**20]}}, 'metadata': {}}"),
    FLOOD_BYPASS.format(kind="display_data", content="{'data': {}, 'metadata': {}, 'transient': {'display_id': 'C' * 3 * 2**20}}"),
    FLOOD_BYPASS.format(kind="comm_msg", content="{'comm_id': 'c', 'data': {'v': 'D' * 3 * 2**20}}"),
    FLOOD_RAW,
], ids=["metadata", "bypass-metadata", "bypass-non-str", "bypass-transient", "bypass-comm", "raw-frames"])
def test_output_floods_of_any_shape_stop_at_the_cap_and_host_memory_stays_bounded(code):
    cap = 4 * 2**20
    with Sandbox(timeout=60, memory="2GiB", output=cap) as sb:
        sb.run("from IPython.display import publish_display_data; from jupyter_client.session import Session")
        rss0 = _rss_bytes()
        r = sb.run(code)
        rss1 = _rss_bytes()
        assert r.error is None, r.error
        text = "".join(o.text for o in r.outputs)
        assert sb.run("sent").outputs[0].data["text/plain"] in ("40", "25", "60")  # it ran to its end (75-250 MiB)
        assert "output limit of 4 MiB per run reached" in text
        assert _kept_bytes(r) <= cap + 2**20
        # what may wait on our side is bounded (sandbox._client.IOPUB_QUEUE_BYTES, 96 MiB), whatever is sent
        assert rss1 - rss0 < 128 * 2**20, f"the supervisor grew by {(rss1 - rss0) >> 20} MiB"
        assert sb.run("1 + 1").outputs[0].data["text/plain"] == "2"  # and the sandbox is fine


def test_huge_error_values_are_cut():
    with Sandbox(timeout=30, output="64KiB") as sb:
        r = sb.run("raise ValueError('E' * 50 * 2**20)")
        assert r.error is not None and r.error.ename == "ValueError"
        assert len(r.error.evalue) + sum(map(len, r.error.traceback)) < 200 * 1024


def test_writes_to_fd_1_stop_at_the_log_cap_inside_the_sandbox_quota():
    with Sandbox(timeout=30) as sb:
        r = sb.run("""
import os
n = 0
try:
    for i in range(400):  # 400 MiB, at the OS level, past sys.stdout
        os.write(1, b'x' * 2**20)
        n += 1
    print('wrote all', n)
except OSError as e:
    print('stopped after', n, 'MiB:', e.strerror)
""")
        text = "".join(o.text for o in r.outputs)
        assert "stopped after" in text and "No space left" in text, text
        log = os.path.join(sb.state_dir, "log", "kernel.log")
        assert os.path.getsize(log) <= LOG_SIZE
        with open("/proc/self/mounts") as f:  # the log lives on a tmpfs, not on the host's disk
            assert any(line.split()[1] == os.path.dirname(log) and line.split()[2] == "tmpfs" for line in f)
        total = 0
        for root, _, files in os.walk(sb.state_dir):
            total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
        assert total < 4 * LOG_SIZE
        assert sb.run("print('still here')").outputs[0].text == "still here\n"


def test_an_endless_flood_still_ends_at_the_timeout():
    with Sandbox(timeout=3, memory="1GiB") as sb:
        t0 = time.monotonic()
        r = sb.run("""
from jupyter_client.session import Session
k = get_ipython().kernel
parent = k.get_parent("shell")
while True:
    Session.send(k.session, k.iopub_socket, "display_data", {"data": {"text/plain": "x" * 1000}}, parent=parent)
""")
        assert r.error is not None and r.error.ename == "SandboxTimeout"
        assert time.monotonic() - t0 < 3 + 2 + 5  # timeout + grace + slack
        assert _kept_bytes(r) <= 4 * 2**20 + 2**20


def test_a_flood_from_a_background_thread_is_bounded_in_the_supervisor():
    with Sandbox(timeout=20, memory="2GiB") as sb:
        sb.run("1")
        rss0 = _rss_bytes()
        sb.run("""
import threading
k = get_ipython().kernel
msg = k.session.msg("display_data", {"data": {"text/plain": "x"}, "metadata": {"p": "A" * 4 * 2**20}},
                    parent=k.get_parent("shell"))
frames = k.session.serialize(msg)
done = threading.Event()
def flood():
    done.wait(0.2)
    for i in range(60):  # ~250 MiB while no run is collecting
        k.iopub_socket.send_multipart(frames)
    open("/home/user/flood-done", "w").close()
threading.Thread(target=flood).start()
""")
        marker = os.path.join(sb.state_dir, "fs", "home", "flood-done")  # watched from outside: no run meanwhile
        deadline = time.monotonic() + 30
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(marker)
        # the kernel may still be pushing the flood out: a run meanwhile counts it against its own budget (and
        # says so); once it is through, a run is clean again, and the supervisor never held more than its bound
        deadline = time.monotonic() + 30
        while True:
            assert _rss_bytes() - rss0 < 128 * 2**20
            r = sb.run("print('next')")
            if [o.text for o in r.outputs] == ["next\n"] or time.monotonic() > deadline:
                break
        assert [o.text for o in r.outputs] == ["next\n"]
