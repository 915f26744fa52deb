"""CurveZMQ for a remote kernel's five channels: its traffic is encrypted and only key holders connect.

A GPU session's kernel listens on five TCP ports of its host (shell, iopub, stdin, control, hb), which
the notebook dials directly. Jupyter's HMAC key signs messages but hides nothing, and iopub (a PUB
socket) serves anyone who subscribes. So every pool kernel whose ports face a network gets its own Curve
key pair, made on the host when the kernel is made (one kernel serves one session: the keys are per
session):

- the kernel side: the pair is written into the kernel's connection file (a 0700 directory, the file
  0600, removed as soon as the kernel has read it: ``pool.KernelProcess.drop_files``); ipykernel
  (7.3 and later, the Jupyter transport-encryption proposal) then makes each of its five sockets a
  ``CURVE_SERVER`` before binding it. Its internal inproc sockets are left alone;
- the hand-over: the pair travels in the lease's connection info, over the Dask channel, which is TLS
  with mutual authentication (``_tls.py``), and is held in memory only on the notebook side;
- the notebook side: every socket a client makes gets ``CURVE_SERVERKEY``/``PUBLICKEY``/``SECRETKEY``
  (:func:`secure_context` sets them as its zmq Context's defaults; jupyter_client 8.9 and later does the
  same from the connection info by itself).

Curve's handshake starts with a box only the holder of the server's public key can make, so a client
without the session's keys never completes it: the kernel never sees its messages, and it sees none of
the kernel's (each connection has its own short-term keys: forward secrecy).

Which kernels: ``BURSTLAB_ENCRYPT_KERNELS`` in the GPU worker's environment. ``auto`` (the default) encrypts
every kernel whose ports face a network, and leaves those bound to a loopback address (the embedded
cluster's, on the notebook's own machine) in the clear, like any local Jupyter kernel: traffic that never
leaves the machine keeps loopback speed (Curve costs a 100 MiB push about half its throughput). ``1``
encrypts loopback kernels too (a machine shared with users you do not trust); ``0`` none (benchmarks only).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os

import zmq

from burstlab.errors import BurstlabError

ENV = "BURSTLAB_ENCRYPT_KERNELS"
PUBLIC, SECRET = "curve_publickey", "curve_secretkey"  # the connection-info fields (Jupyter's names)


ALWAYS = ("1", "true", "yes", "on", "always")
NEVER = ("0", "false", "no", "off", "never")


def wanted(ip: str | None = None) -> bool:
    """Whether this host starts a kernel that binds ``ip`` encrypted (``BURSTLAB_ENCRYPT_KERNELS``: ``auto``,
    the default, unless ``ip`` is a loopback address; an unknown ``ip`` counts as facing a network)."""
    setting = os.environ.get(ENV, "auto").strip().lower()
    if setting in ALWAYS:
        return True
    if setting in NEVER:
        return False
    if setting not in ("", "auto"):
        raise BurstlabError(f"{ENV}={os.environ[ENV]!r} is not a setting: use auto (the default: encrypt kernels "
                            "that face a network), 1 (encrypt every kernel) or 0 (none; benchmarks only).")
    return ip is None or not _loopback(ip)


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:  # a host name
        return ip == "localhost"


@functools.lru_cache(maxsize=1)
def check_support() -> None:
    """Raise a clear error if this host cannot run Curve kernels (pyzmq without libsodium, or an
    ipykernel / jupyter_client too old to read Curve keys from a connection file)."""
    fix = (f"or, on a network you trust, start the GPU worker with {ENV}=0 (its kernels' traffic is then "
           "readable by anyone on the path)")
    if not zmq.has("curve"):
        raise BurstlabError(f"Encrypted kernels need CurveZMQ, which this pyzmq lacks (libzmq built without "
                            f"libsodium): `pip install --force-reinstall pyzmq` (its wheels include it), {fix}.")
    from ipykernel.kernelapp import IPKernelApp
    from jupyter_client.connect import ConnectionFileMixin

    if not hasattr(IPKernelApp, "_apply_curve_server_options") or PUBLIC not in ConnectionFileMixin.class_traits():
        import ipykernel
        import jupyter_client

        raise BurstlabError(
            f"Encrypted kernels need ipykernel>=7.3 and jupyter_client>=8.9 on the GPU host (found ipykernel "
            f"{ipykernel.__version__}, jupyter_client {jupyter_client.__version__}): "
            f"`pip install -U 'ipykernel>=7.3' 'jupyter_client>=8.9'`, {fix}.")


def new_keys() -> dict[str, str]:
    """A fresh Curve key pair for one kernel, as connection-info fields (Z85 text)."""
    public, secret = zmq.curve_keypair()
    return {PUBLIC: public.decode("ascii"), SECRET: secret.decode("ascii")}


def add_to_connection_file(path: str, keys: dict[str, str]) -> None:
    """Add ``keys`` to the connection file at ``path`` (rewritten in place: 0600, never readable by others)."""
    with open(path) as f:
        info = json.load(f)
    info.update(keys)
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=1)
    except BaseException:
        os.unlink(path + ".new")
        raise
    os.replace(path + ".new", path)


def encrypted(info: dict) -> bool:
    """Whether the kernel of connection info ``info`` speaks Curve."""
    return bool(info.get(PUBLIC)) and bool(info.get(SECRET))


def exposed(info: dict) -> bool:
    """Whether the kernel of ``info`` is in the clear on a network (its host runs ``BURSTLAB_ENCRYPT_KERNELS=0``,
    or a burstlab too old to encrypt): its traffic can be read, and its ports reached, by others on the path."""
    return not encrypted(info) and not _loopback(str(info.get("ip", "")))


def exposed_note(info: dict) -> str:
    return (f"[burstlab: the remote kernel at {info.get('ip')} is not encrypted (its GPU worker runs with {ENV}=0, "
            "or a burstlab too old to encrypt kernels): its code and outputs cross the network readable. Start "
            f"that worker without {ENV}=0 (or upgrade burstlab there).]\n")


def client_options(info: dict) -> list[tuple[int, bytes]]:
    """The socket options that make a client socket of ``info``'s kernel a Curve client ([] if in the clear)."""
    if not encrypted(info):
        return []
    public, secret = (_bytes(info[k]) for k in (PUBLIC, SECRET))
    return [(zmq.CURVE_SERVERKEY, public), (zmq.CURVE_PUBLICKEY, public), (zmq.CURVE_SECRETKEY, secret)]


def secure_context(context: zmq.Context, info: dict) -> None:
    """Make every socket ``context`` creates from now on a Curve client of ``info``'s kernel (the context
    must be this kernel's client's own: pyzmq applies a Context's options to all its new sockets)."""
    for option, value in client_options(info):
        context.setsockopt(option, value)


def secure_socket(socket: zmq.Socket, info: dict) -> None:
    """Make one socket (before it connects) a Curve client of ``info``'s kernel."""
    for option, value in client_options(info):
        socket.setsockopt(option, value)


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("ascii")


__all__ = ["ENV", "PUBLIC", "SECRET", "add_to_connection_file", "check_support", "client_options", "encrypted",
           "exposed", "exposed_note", "new_keys", "secure_context", "secure_socket", "wanted"]
