"""A sandbox's network as a policy: its own network namespace, a veth pair, NAT and an nftables table.

``network=False``: the jail makes an empty namespace (loopback only); nothing here runs.
Otherwise the supervisor wires a namespace before the sandbox starts (``setup``) and the jail joins it:

* ``ip netns add bl<slot>`` (a slot is a /30 of ``SANDBOX_NET``, claimed by the sandbox); a veth pair,
  host end ``blh<slot>`` = the /30's first address, the sandbox's end (``eth0`` inside) the second, with
  a default route through the host end;
* one nftables table per sandbox (``inet bl<slot>``): everything the sandbox sends to this host
  (``input`` hook: the host's loopback, its other addresses, the Dask scheduler, other sandboxes'
  gateways) is dropped; forwarded traffic from it goes out through NAT if the policy allows its
  destination (``True``: any address but the sandbox range; a list: only those), and nothing from
  outside may open a connection to it; a spoofed source address is dropped;
* ``teardown`` deletes the table and the namespace (which deletes the veth pair).

Needs ``ip`` (iproute2) and ``nft`` (nftables) and turns on IPv4 forwarding
(``net.ipv4.ip_forward``), as any container runtime does. IPv4 only: the sandbox has no IPv6 route.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field

from burstlab.errors import SandboxError

SANDBOX_NET = ipaddress.ip_network(os.environ.get("BURSTLAB_SANDBOX_NET", "10.231.0.0/16"))
_SLOTS = SANDBOX_NET.num_addresses // 4
_ENTRY_FORMS = ('False, True, or a list of "host:port", "ip", "ip:port", "CIDR" or "CIDR:port" entries, '
                'e.g. network=["pypi.org:443", "10.0.0.0/8"]')


@dataclass(frozen=True)
class Policy:
    kind: str  # "none", "any" or "allow"
    public: bool | tuple[str, ...] = False  # what ``Sandbox.network`` shows
    rules: tuple[tuple[str, int | None], ...] = field(default_factory=tuple)  # (CIDR, port or None)


def _resolve(host: str) -> list[str]:
    try:
        return [str(ipaddress.IPv4Network(host, strict=False))]
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
        raise SandboxError(f"network entry host {host!r} is neither an IPv4 address, a CIDR nor a host name; "
                           f"give {_ENTRY_FORMS}.")
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SandboxError(f"network entry {host!r}: the name does not resolve ({exc.strerror}); give an address "
                           "or CIDR instead.") from None
    return sorted({f"{info[4][0]}/32" for info in infos})


def parse_policy(network) -> Policy:
    """``network=`` as given by a user -> a Policy (names are resolved now, once)."""
    if network is False or network is None:
        return Policy("none")
    if network is True:
        return Policy("any", True)
    if isinstance(network, str) or not isinstance(network, (list, tuple)) or not network:
        raise SandboxError(f"network={network!r}: give {_ENTRY_FORMS}.")
    rules: list[tuple[str, int | None]] = []
    for entry in network:
        if not isinstance(entry, str) or not entry.strip():
            raise SandboxError(f"network entry {entry!r}: give {_ENTRY_FORMS}.")
        entry = entry.strip()
        if ":" in entry:
            host, _, port_s = entry.rpartition(":")
            if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
                raise SandboxError(f"network entry {entry!r}: the port must be 1-65535 (IPv6 is not supported).")
            port: int | None = int(port_s)
        else:
            host, port = entry, None
        for cidr in _resolve(host):
            net = ipaddress.IPv4Network(cidr)
            if net.overlaps(ipaddress.IPv4Network("127.0.0.0/8")) or net.overlaps(SANDBOX_NET) \
                    or net.overlaps(ipaddress.IPv4Network("0.0.0.0/8")):
                raise SandboxError(f"network entry {entry!r} ({cidr}) covers this host's loopback or the sandboxes' "
                                   f"own range {SANDBOX_NET}; a sandbox never reaches those.")
            rules.append((cidr, port))
    return Policy("allow", tuple(e.strip() for e in network), tuple(rules))


# -- wiring ------------------------------------------------------------------------------------------
def _slot_file(slot: int) -> str:
    from ._jailspec import STATE_BASE

    return os.path.join(STATE_BASE, "net", str(slot))


def net_record(uid: int) -> dict:
    """Names and addresses of one sandbox's network (written to its owner record before setup).
    Its /30 (a slot of SANDBOX_NET) is claimed by creating ``STATE_BASE/net/<slot>`` exclusively."""
    os.makedirs(os.path.dirname(_slot_file(0)), mode=0o700, exist_ok=True)
    for i in range(_SLOTS):
        slot = (uid + i) % _SLOTS
        if slot == 0:  # keep the range's first /30 unused (its network address is the range's)
            continue
        try:
            os.close(os.open(_slot_file(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            continue
        base = SANDBOX_NET.network_address + 4 * slot
        return {"netns": f"bl{slot}", "host_if": f"blh{slot}", "table": f"bl{slot}",
                "gateway": str(base + 1), "address": str(base + 2), "slot": slot}
    raise SandboxError(f"Every address block of {SANDBOX_NET} is in use by a sandbox with network; close some.")


def _tools() -> tuple[str, str]:
    ip, nft = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin"), \
        shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if not ip or not nft:
        raise SandboxError("A sandbox with network needs `ip` (iproute2) and `nft` (nftables) on this host: "
                           "`apt-get install iproute2 nftables`, or use network=False.")
    return ip, nft


def _run(cmd: list[str], stdin: str | None = None) -> None:
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise SandboxError(f"`{' '.join(cmd)}` did not finish within 20 s while wiring a sandbox's network.") from None
    if p.returncode != 0:
        raise SandboxError(f"`{' '.join(cmd)}` failed while wiring a sandbox's network: {p.stderr.strip()[:500]}")


def _ruleset(rec: dict, policy: Policy) -> str:
    t, hif, addr = rec["table"], rec["host_if"], rec["address"]
    allow = []
    if policy.kind == "any":
        allow.append("accept")
    for cidr, port in policy.rules:
        allow.append(f"ip daddr {cidr} " + (f"meta l4proto {{ tcp, udp }} th dport {port} " if port else "") + "accept")
    fwd = "\n".join(f'        iifname "{hif}" {a}' for a in allow)
    return f"""table inet {t} {{
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname "{hif}" drop
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        oifname "{hif}" ct state established,related accept
        oifname "{hif}" drop
        iifname "{hif}" ip saddr != {addr} drop
        iifname "{hif}" meta nfproto ipv6 drop
        iifname "{hif}" ip daddr {{ {SANDBOX_NET}, 127.0.0.0/8, 0.0.0.0/8 }} drop
{fwd}
        iifname "{hif}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        ip saddr {addr} oifname != "{hif}" masquerade
    }}
}}
"""


def _enable_forwarding() -> None:
    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path) as f:
        if f.read().strip() == "1":
            return
    try:
        with open(path, "w") as f:
            f.write("1")
    except OSError as exc:
        raise SandboxError(f"Cannot turn on IPv4 forwarding ({exc.strerror}), which a sandbox with network needs: "
                           "run `sysctl -w net.ipv4.ip_forward=1` as root, or use network=False.") from None


def setup(rec: dict, policy: Policy) -> dict:
    """Create the namespace, the veth pair, the routes and the firewall table; returns what the jail needs."""
    ip, nft = _tools()
    _enable_forwarding()
    ns, hif = rec["netns"], rec["host_if"]
    # on failure the caller tears down through the owner record, once (teardown also releases the slot,
    # so a second call could remove a namespace of the next sandbox to claim it)
    _run([ip, "-batch", "-"], "\n".join([
        f"netns add {ns}",
        f"link add {hif} type veth peer name bls{rec['slot']} netns {ns}",
        f"addr add {rec['gateway']}/30 dev {hif}",
        f"link set {hif} up",
    ]) + "\n")
    _run([ip, "-n", ns, "-batch", "-"], "\n".join([
        "link set lo up",
        f"link set bls{rec['slot']} name eth0",
        f"addr add {rec['address']}/30 dev eth0",
        "link set eth0 up",
        f"route add default via {rec['gateway']}",
    ]) + "\n")
    _run([nft, "-f", "-"], _ruleset(rec, policy))
    return {"netns_path": f"/run/netns/{ns}"}


def teardown(rec: dict) -> None:
    """Remove the table, the namespace and the host end of the veth (each step tolerates its absence)."""
    ip, nft = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin"), shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
    for cmd in ([nft, "delete", "table", "inet", rec["table"]] if nft else None,
                [ip, "netns", "delete", rec["netns"]] if ip else None,
                [ip, "link", "delete", rec["host_if"]] if ip else None):
        if cmd:
            subprocess.run(cmd, capture_output=True, timeout=20)
    try:
        os.unlink(_slot_file(int(rec["slot"])))
    except (OSError, KeyError, ValueError):
        pass


__all__ = ["Policy", "SANDBOX_NET", "net_record", "parse_policy", "setup", "teardown"]
