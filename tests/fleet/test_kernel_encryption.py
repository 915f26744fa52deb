"""Kernel traffic between the notebook and a GPU host is encrypted and authenticated (CurveZMQ).

The notebook (root namespace) talks to its session's kernel on host gpuA across the test fleet's bridge.
A raw packet capture on gpuA's link must never show a secret that a cell prints, that its source holds or
that a push carries, while the same capture does show it for a kernel in the clear (so the capture can
see what it looks for). A client that knows everything but the session's Curve keys (even the HMAC key)
gets nothing from any of the five ports, and cannot run code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session

from burstlab.examples.fleet import ADDRS, veth, wait_for
from burstlab.remote_kernel import _curve

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class Capture:
    """Every frame crossing one interface (a raw AF_PACKET socket), as TCP payload per flow."""

    def __init__(self, ifname: str):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        with contextlib.suppress(OSError):  # root may grow the buffer past rmem_max: drop nothing under load
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.flows: dict[tuple, bytearray] = {}
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()  # once stopping: read what is queued, then end
            try:
                frame = self.sock.recv(1 << 18)  # both directions: frames this interface sends and receives
            except TimeoutError:
                if stopping:  # nothing more came for 0.1 s after the stop: all is read
                    return
                continue
            self.frames += 1
            self._take(frame)

    def _take(self, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":  # IPv4 only (the fleet's addresses)
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0] or len(ip)
        if ip[9] != 6:  # TCP
            return
        tcp = ip[ihl:total]
        sport, dport = struct.unpack("!HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            key = (socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport)
            self.flows.setdefault(key, bytearray()).extend(payload)

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self.drops = struct.unpack("II", self.sock.getsockopt(263, 6, 8))[1]  # SOL_PACKET, PACKET_STATISTICS
        self.sock.close()
        assert not self._thread.is_alive(), "the capture did not finish reading its queue"
        assert self.drops == 0, f"the capture dropped {self.drops} frames: it cannot vouch for what it did not see"

    def bytes_on(self, host: str, ports) -> int:
        """TCP payload bytes to or from ``host`` on any of ``ports``."""
        ports = set(ports)
        return sum(len(p) for (src, sp, dst, dp), p in self.flows.items()
                   if (src == host and sp in ports) or (dst == host and dp in ports))

    def holds(self, needle: bytes) -> bool:
        """Whether ``needle`` appears in any flow's payload stream (or any one frame)."""
        return any(needle in payload for payload in self.flows.values())


@pytest.fixture
def capture():
    caps = []

    def start(ifname: str) -> Capture:
        caps.append(Capture(ifname))
        return caps[-1]

    yield start
    for cap in caps:
        cap.stop()


def _ports(info: dict) -> list[int]:
    return [int(info[name]) for name in PORT_NAMES]


def test_which_kernels_are_encrypted(monkeypatch):
    from burstlab.errors import BurstlabError

    monkeypatch.delenv(_curve.ENV, raising=False)  # auto: every kernel whose ports face a network
    assert _curve.wanted(ADDRS["gpuA"]) and _curve.wanted("0.0.0.0") and _curve.wanted(None)
    assert not _curve.wanted("127.0.0.1") and not _curve.wanted("::1") and not _curve.wanted("localhost")
    monkeypatch.setenv(_curve.ENV, "1")
    assert _curve.wanted("127.0.0.1")
    monkeypatch.setenv(_curve.ENV, "0")
    assert not _curve.wanted(ADDRS["gpuA"])
    monkeypatch.setenv(_curve.ENV, "maybe")
    with pytest.raises(BurstlabError, match="auto"):
        _curve.wanted(ADDRS["gpuA"])


def test_a_kernel_in_the_clear_on_a_network_is_said(capsys):
    import asyncio

    from burstlab.remote_kernel.client import RemoteKernel

    info = {"transport": "tcp", "ip": ADDRS["gpuA"], "key": uuid.uuid4().hex, "signature_scheme": "hmac-sha256",
            **{name: 1 for name in PORT_NAMES}}  # nothing listens there: zmq connects lazily, nothing is sent
    assert _curve.exposed(info) and not _curve.exposed({**info, **_curve.new_keys()})
    assert not _curve.exposed({**info, "ip": "127.0.0.1"})

    async def make() -> None:
        await RemoteKernel(info).aclose()

    asyncio.run(make())
    assert f"the remote kernel at {ADDRS['gpuA']} is not encrypted" in capsys.readouterr().err


def test_an_encrypted_kernel_serves_only_holders_of_its_keys(monkeypatch):
    """No fleet needed: a pool kernel on loopback, encrypted on request; burstlab's client runs a cell and moves a
    buffer cut into frames; a heartbeat in the clear gets no answer."""
    import asyncio

    import numpy as np

    from burstlab.remote_kernel.client import RemoteKernel
    from burstlab.remote_kernel.pool import BOOTSTRAP, KernelProcess

    monkeypatch.setenv(_curve.ENV, "1")
    kernel = KernelProcess("127.0.0.1")
    try:
        kernel.run(BOOTSTRAP)
        kernel.drop_files()
        info = kernel.connection_info
        assert _curve.encrypted(info)
        data = np.arange(3 * 2**20 // 8 + 7, dtype=np.float64)  # three frames and a bit

        async def use() -> tuple:
            rk = RemoteKernel(info)
            try:
                await rk.push({"data": data})
                ex = await rk.execute("print(float(data.sum()))")
                return ex.stdout, (await rk.pull(["data"]))["data"]
            finally:
                await rk.aclose()

        stdout, back = asyncio.run(use())
        assert stdout == f"{float(data.sum())}\n" and np.array_equal(back, data)
        ctx = zmq.Context()
        try:
            hb = ctx.socket(zmq.REQ)
            hb.linger = 0
            hb.connect(f"tcp://127.0.0.1:{info['hb_port']}")
            hb.send(b"ping")
            assert not hb.poll(1000), "the heartbeat answered a client without the keys"
            hb.close()
        finally:
            ctx.term()
    finally:
        kernel.kill()


def test_session_kernels_listen_with_curve_only(notebook):
    session = notebook.session("H100")
    info = session.lease.connection
    assert _curve.encrypted(info), sorted(info)
    listening = subprocess.run(["ip", "netns", "exec", "gpuA", "ss", "-ltnpH"], capture_output=True, text=True,
                               timeout=20).stdout
    kernel = [ln.split()[3].rsplit(":", 1) for ln in listening.splitlines() if f"pid={session.lease.kernel_pid}," in ln]
    # On the network: its five channels and nothing else, so no port in the clear. (ipykernel's pipe for the
    # output of forked subprocesses listens on the host's own loopback, which the network cannot reach.)
    assert {int(port) for addr, port in kernel if addr != "127.0.0.1"} == set(_ports(info)), listening
    assert {addr for addr, _ in kernel} <= {info["ip"], "127.0.0.1"}, listening


def test_a_secret_never_crosses_the_link_in_cleartext(notebook, capture):
    import numpy as np

    session = notebook.session("H100")
    session.execute_sync("1")  # connected and warm: what the capture sees next is this test's traffic
    secret = f"burstlab-secret-{uuid.uuid4().hex}"
    pushed = f"burstlab-pushed-{uuid.uuid4().hex}".encode()
    cap = capture(veth("gpuA"))
    try:
        ex = session.execute_sync(f"print({secret!r})")  # the cell's source and its output both hold it
        assert ex.stdout == secret + "\n"
        blob = np.frombuffer(pushed * 8192, dtype=np.uint8)  # ~300 KiB of it through the variables channel
        session.push_sync({"blob": blob})
        assert session.execute_sync("bytes(blob[:48]).decode()").text == repr(pushed.decode())
        assert session.pull_sync(["blob"])["blob"].tobytes() == blob.tobytes()
    finally:
        cap.stop()
    seen = cap.bytes_on(ADDRS["gpuA"], _ports(session.lease.connection))
    assert seen > 2 * blob.nbytes, f"the capture saw only {seen} bytes of the kernel's traffic"
    assert not cap.holds(secret.encode()), "the printed secret crossed the link in cleartext"
    assert not cap.holds(pushed), "the pushed bytes crossed the link in cleartext"


def test_the_capture_does_see_a_kernel_in_the_clear(fleet, capture, tmp_path):
    """The same capture, a plain (unencrypted) ipykernel on gpuA: the secret shows (the check above can fail)."""
    conn = tmp_path / "plain.json"
    conn.write_text(json.dumps({"ip": ADDRS["gpuA"], "transport": "tcp", "key": uuid.uuid4().hex,
                                "signature_scheme": "hmac-sha256", **{name: 0 for name in PORT_NAMES}}))
    os.chmod(conn, 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "BURSTLAB_"))}
    proc = subprocess.Popen(["ip", "netns", "exec", "gpuA", sys.executable, "-m", "ipykernel_launcher", "-f", str(conn),
                             "--HistoryManager.enabled=False"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    kc = None
    try:
        info = wait_for("the plain kernel's ports", lambda: _bound(conn) or proc.poll() is not None, 60)
        assert isinstance(info, dict), f"the plain kernel exited ({proc.returncode})"
        secret = f"burstlab-plain-{uuid.uuid4().hex}"
        cap = capture(veth("gpuA"))
        kc = BlockingKernelClient()
        kc.load_connection_info(info)
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out = []
        kc.execute_interactive(f"print({secret!r})", timeout=30, output_hook=out.append)
        cap.stop()
        assert any(m["content"].get("text") == secret + "\n" for m in out), out
        assert cap.holds(secret.encode()), "the capture did not see a kernel's cleartext traffic"
    finally:
        if kc is not None:
            kc.stop_channels()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _bound(conn) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(conn.read_text())
        if all(info.get(name) for name in PORT_NAMES):
            return info
    return None


def _send(send) -> None:
    try:
        send()
    except zmq.Again:  # no peer would take it: the kernel refused the handshake
        pass


def test_a_client_without_the_keys_gets_nothing(notebook, tmp_path):
    """Knowing the address, the ports and even the HMAC key, but not the Curve keys: no code runs, no output
    is read, no heartbeat answers, a shutdown is not obeyed; the session goes on."""
    session = notebook.session("H100")
    info = session.lease.connection
    marker = tmp_path / "attacked"  # gpuA shares this file system (it is a network namespace)
    attack = f"open({str(marker)!r}, 'w').write('x')"
    ctx = zmq.Context()
    sockets = []

    def connect(kind: int, port_name: str, curve: dict | None = None) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.linger = 0
        # A socket whose handshake the kernel refuses has no peer once libzmq drops the failed connection, and
        # a send on it would then block for ever: give up after a second (nothing took it, as it should be).
        sock.sndtimeo = 1000
        if curve:
            _curve.secure_socket(sock, curve)
        sock.connect(f"tcp://{info['ip']}:{info[port_name]}")
        sockets.append(sock)
        return sock

    signer = Session(key=str(info["key"]).encode(), signature_scheme=info["signature_scheme"])
    try:
        plain_shell = connect(zmq.DEALER, "shell_port")
        wrong_keys = _curve.new_keys()  # a Curve client with keys of its own: the server's key is not its
        curved_shell = connect(zmq.DEALER, "shell_port", wrong_keys)
        control = connect(zmq.DEALER, "control_port")
        iopub = connect(zmq.SUB, "iopub_port")
        iopub.setsockopt(zmq.SUBSCRIBE, b"")
        hb = connect(zmq.REQ, "hb_port")
        for sock in (plain_shell, curved_shell):
            _send(lambda: signer.send(sock, "execute_request", {
                "code": attack, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False,
                "stop_on_error": True}))
        _send(lambda: hb.send(b"ping"))
        # Output for a second and a half: a subscriber in the clear would have subscribed by then and hold some.
        ex = session.execute_sync("import time\nfor i in range(15): print(i, flush=True); time.sleep(0.1)")
        assert ex.stdout == "".join(f"{i}\n" for i in range(15))
        _send(lambda: signer.send(control, "shutdown_request", {"restart": False}))  # in the clear it would exit
        deadline = time.monotonic() + 3.0
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(int(left * 1000)))
            assert not ready, f"a client without the keys got a reply on {[s.type for s in ready]}"
    finally:
        for sock in sockets:
            sock.close()
        ctx.term()
    assert not marker.exists(), "a client without the keys ran code on the kernel"
    assert session.execute_sync("'alive'").text == "'alive'"  # the shutdown_request was not obeyed
