"""``network=`` as a policy, against real listeners: one on this host (loopback and all addresses)
and one on a test host in a network namespace this module creates (10.250.7.2 on a private veth)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import Sandbox, SandboxPool
from burstlab.sandbox._reaper import read_record

TEST_HOST, HOST_SIDE = "10.250.7.2", "10.250.7.1"


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)}: {p.stderr}")
    return p


class HostListener:
    """A TCP server on this host that answers b"hi" and counts connections."""

    def __init__(self, addr: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            c.sendall(b"hi")
            c.close()

    def close(self) -> None:
        self._stop = True
        self._t.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def net():
    """Listeners on the host's 127.0.0.1 and 0.0.0.0, and a test host namespace with two listeners."""
    tag = uuid.uuid4().hex[:6]
    ns, hif = f"bltest{tag}", f"blt{tag}"
    _sh("ip", "netns", "add", ns)
    server = None
    loop, anyaddr = HostListener("127.0.0.1"), HostListener("0.0.0.0")
    try:
        _sh("ip", "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _sh("ip", "addr", "add", f"{HOST_SIDE}/24", "dev", hif)
        _sh("ip", "link", "set", hif, "up")
        _sh("ip", "-n", ns, "addr", "add", f"{TEST_HOST}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, TEST_HOST], stdout=subprocess.PIPE, text=True)
        ports = json.loads(server.stdout.readline())
        yield {"loop": loop, "any": anyaddr, "port": ports[0], "other_port": ports[1]}
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
            server.stdout.close()
        loop.close()
        anyaddr.close()
        _sh("ip", "netns", "delete", ns, check=False)
        _sh("ip", "link", "delete", hif, check=False)


SERVER = """
import json, socket, sys, threading
socks = []
for _ in range(2):
    s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(16); socks.append(s)
print(json.dumps([s.getsockname()[1] for s in socks]), flush=True)
def serve(s):
    while True:
        c, _ = s.accept(); c.sendall(b"hi"); c.close()
for s in socks[1:]:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
serve(socks[0])
"""

PROBE = """
import socket
from concurrent.futures import ThreadPoolExecutor
def probe(target):
    try:
        with socket.create_connection(target, timeout=1.0) as s:
            return s.recv(2).decode() or "connected"
    except OSError as e:
        return type(e).__name__
targets = {targets!r}
with ThreadPoolExecutor(len(targets)) as ex:
    print(dict(zip([f"{{a}}:{{p}}" for a, p in targets], ex.map(probe, targets))))
"""


def _probe(sb: Sandbox, targets: list[tuple[str, int]]) -> dict:
    r = sb.run(PROBE.format(targets=targets), timeout=20)
    assert r.error is None, r.error
    import ast

    return ast.literal_eval(r.outputs[0].text)


def _gateway(sb: Sandbox) -> str:
    r = sb.run("print(open('/proc/net/route').read())")
    rows = [line.split() for line in r.outputs[0].text.splitlines()[1:] if line.strip()]
    hexgw = [row[2] for row in rows if row[1] == "00000000"][0]  # the default route's gateway
    return socket.inet_ntoa(bytes.fromhex(hexgw)[::-1])


def _wired() -> tuple[str, str, str]:
    return (_sh("ip", "netns", "list").stdout, _sh("nft", "list", "tables").stdout, _sh("ip", "-o", "link").stdout)


def _host_targets(net: dict, gw: str) -> list[tuple[str, int]]:
    """Every way to this host: its loopback (from inside, 127.0.0.1 is the sandbox's own), its
    address on the test network, and the sandbox's own gateway, for the listener on all addresses."""
    return [("127.0.0.1", net["loop"].port), (HOST_SIDE, net["any"].port), (gw, net["any"].port)]


def test_no_network_reaches_nothing(net):
    with Sandbox(timeout=20) as sb:
        got = _probe(sb, [(TEST_HOST, net["port"]), ("127.0.0.1", net["loop"].port), (HOST_SIDE, net["any"].port)])
        assert "hi" not in got.values(), got
        ifaces = sb.run("print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))")
        assert ifaces.outputs[0].text.strip() == "['lo']"


def test_network_true_reaches_outside_but_never_this_host(net):
    before = (net["loop"].connections, net["any"].connections)
    with Sandbox(timeout=20, network=True) as sb:
        assert sb.network is True
        gw = _gateway(sb)
        got = _probe(sb, [(TEST_HOST, net["port"]), (TEST_HOST, net["other_port"])] + _host_targets(net, gw))
        assert got[f"{TEST_HOST}:{net['port']}"] == "hi" and got[f"{TEST_HOST}:{net['other_port']}"] == "hi", got
        for a, p in _host_targets(net, gw):
            assert got[f"{a}:{p}"] != "hi", (a, p, got)
    assert (net["loop"].connections, net["any"].connections) == before


def test_allowlist_reaches_exactly_its_entries(net):
    before = (net["loop"].connections, net["any"].connections)
    with Sandbox(timeout=20, network=[f"{TEST_HOST}:{net['port']}"]) as sb:
        assert sb.network == (f"{TEST_HOST}:{net['port']}",)
        gw = _gateway(sb)
        got = _probe(sb, [(TEST_HOST, net["port"]), (TEST_HOST, net["other_port"])] + _host_targets(net, gw))
        assert got[f"{TEST_HOST}:{net['port']}"] == "hi", got
        assert got[f"{TEST_HOST}:{net['other_port']}"] == "TimeoutError", got  # not on the list: dropped
        for a, p in _host_targets(net, gw):
            assert got[f"{a}:{p}"] != "hi", (a, p, got)
    assert (net["loop"].connections, net["any"].connections) == before
    # a CIDR entry allows every port of its addresses; one that does not cover the test host allows none
    with Sandbox(timeout=20, network=["10.250.7.0/24"]) as sb:
        got = _probe(sb, [(TEST_HOST, net["port"]), (TEST_HOST, net["other_port"])])
        assert set(got.values()) == {"hi"}, got
    with Sandbox(timeout=20, network=["10.250.8.0/24", "192.0.2.1:80"]) as sb:
        got = _probe(sb, [(TEST_HOST, net["port"])])
        assert got[f"{TEST_HOST}:{net['port']}"] == "TimeoutError", got


def test_every_namespace_veth_and_table_is_removed_on_close(net):
    sb = Sandbox(timeout=20, network=True).start()
    rec = read_record(sb.state_dir)["net"]
    ns, table, hif = rec["netns"], rec["table"], rec["host_if"]
    netns, tables, links = _wired()
    assert ns in netns.split() and f"table inet {table}" in tables and f" {hif}@" in links
    sb.close()
    netns, tables, links = _wired()
    assert ns not in netns.split() and f"table inet {table}\n" not in tables + "\n" and f" {hif}@" not in links
    assert not os.path.exists(sb.state_dir)


def test_pool_keeps_its_network_policy(net):
    with SandboxPool(size=1, network=[f"{TEST_HOST}:{net['port']}"]) as pool:
        sb = pool.acquire()
        try:
            assert _probe(sb, [(TEST_HOST, net["port"])])[f"{TEST_HOST}:{net['port']}"] == "hi"
        finally:
            sb.close()


@pytest.mark.parametrize("bad,match", [
    (["127.0.0.1:8786"], "loopback"), (["localhost:80"], "loopback"), (["10.231.0.0/16"], "own range"),
    (["10.0.0.1:0"], "port"), (["10.0.0.1:99999"], "port"), ("10.0.0.1", "give"), ([], "give"), ([""], "give"),
    (["bad host!"], "neither"), (["[::1]:80"], "IPv6|neither"), ([42], "give"),
])
def test_bad_policies_are_refused_before_anything_starts(bad, match):
    with pytest.raises(SandboxError, match=match):
        Sandbox(network=bad)
