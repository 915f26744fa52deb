"""A small async Jupyter-protocol client for one sandboxed kernel, over ZMQ ipc sockets.

Written here rather than using jupyter_client's ``AsyncKernelClient`` for three reasons: the iopub
socket gets ``ZMQ_MAXMSGSIZE`` and a receive high-water mark before it connects (so one message can
never exceed the output budget by much, and what waits on our side is bounded in bytes), ``execute`` keeps a running byte count of every message's encoded size (data, metadata,
transient, comm messages, whatever their shape) and stops keeping output past the limit, and the
sockets are opened safely: the socket files live in a dir the sandbox owns, so each is opened with
``O_PATH | O_NOFOLLOW``, checked to be a socket of the sandbox's uid, and connected through
``/proc/self/fd/N``, which pins that very inode (a symlink the sandbox swaps in later, to a host
socket, is never followed, reconnects included). ZMQ errors become :class:`SandboxError` here and
nowhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import stat
import time
import uuid
from typing import Callable

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from burstlab._collect import OutputCollector
from burstlab.errors import SandboxError
from burstlab.wire import OUTPUT_KINDS, Output

_OVERHEAD = 600  # the signature, header and parent header of a message: not counted against the output cap
# What iopub may queue on our side, in bytes (as messages of the largest size allowed): past it ZMQ drops
# new messages (a flood is dropped, not buffered in the supervisor's memory). The kernel's own send queue
# is unbounded, in the sandbox's memory, so a burst we drain in time is not lost.
IOPUB_QUEUE_BYTES = 96 * 1024 * 1024


def open_socket(path: str, owner_uid: int | None) -> int:
    """An ``O_PATH`` descriptor of the unix socket at ``path``; refuses a symlink, anything but a
    socket, and a socket that is not the sandbox's own. FileNotFoundError while it is not there yet."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode) or (owner_uid is not None and st.st_uid != owner_uid):
        os.close(fd)
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else ("not a socket" if not stat.S_ISSOCK(st.st_mode)
                                                            else f"a socket of uid {st.st_uid}")
        raise SandboxError(f"Refused to connect to {path}: it is {what}, not the sandbox kernel's own socket "
                           "(something in the sandbox replaced it). Restart the sandbox.")
    return fd


def connection_info(ip: str, key: str) -> dict:
    return {
        "transport": "ipc", "ip": ip, "key": key, "signature_scheme": "hmac-sha256",
        "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5,
        "kernel_name": "python3",
    }


class Collected(OutputCollector):
    """What one execute gathered so far (the supervisor's bounded buffer): burstlab's one iopub collector, with
    every message counted by its size as received; an output past the cap is dropped and counted in ``dropped``,
    and the sandbox says so after the run."""

    def __init__(self, limit: int, on_output: Callable[[Output], None] | None = None) -> None:
        super().__init__(limit, on_output, inline_marker=False)


class KernelClient:
    """Shell, control and iopub sockets to one kernel."""

    def __init__(self, conn: dict, max_msg_bytes: int, owner_uid: int | None = None) -> None:
        self.session = Session(key=conn["key"].encode(), signature_scheme=conn["signature_scheme"], username="burstlab")
        self.ctx = zmq.asyncio.Context()
        self.conn = conn
        self.owner_uid = owner_uid
        self._fds: list[int] = []

        def sock(kind: int, opts: tuple = ()) -> zmq.asyncio.Socket:
            s = self.ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RECONNECT_IVL, 10)
            for k, v in opts:
                s.setsockopt(k, v)
            return s

        self.shell = sock(zmq.DEALER, ((zmq.MAXMSGSIZE, max_msg_bytes),))
        self.control = sock(zmq.DEALER)
        hwm = max(16, min(1000, IOPUB_QUEUE_BYTES // max_msg_bytes))
        self.iopub = sock(zmq.SUB, ((zmq.MAXMSGSIZE, max_msg_bytes), (zmq.RCVHWM, hwm), (zmq.SUBSCRIBE, b"")))
        self._iopub_sync = zmq.Socket.shadow(self.iopub.underlying)
        self._poller = zmq.asyncio.Poller()
        self._poller.register(self.shell, zmq.POLLIN)
        self._poller.register(self.iopub, zmq.POLLIN)
        self._connected = False
        self._closed = False
        self._drain: asyncio.Future | None = None

    async def _connect(self, deadline: float, died: asyncio.Future) -> None:
        """Connect each socket once its file exists, through a pinned descriptor (see the module doc)."""
        for s, port in ((self.shell, "shell_port"), (self.control, "control_port"), (self.iopub, "iopub_port")):
            path = f"{self.conn['ip']}-{self.conn[port]}"
            while True:
                try:
                    fd = open_socket(path, self.owner_uid)
                    break
                except FileNotFoundError:
                    if died.done():
                        raise SandboxError("The sandbox kernel exited while starting; see its log (Sandbox.log()).") from None
                    if time.monotonic() > deadline:
                        raise SandboxError(f"The sandbox kernel made no socket at {path} in time; see Sandbox.log().") from None
                    await asyncio.sleep(0.002)
            self._fds.append(fd)
            s.connect(f"ipc:///proc/self/fd/{fd}")
        self._connected = True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._drain is not None:
                self._drain.cancel()
            for s in (self.shell, self.control, self.iopub):
                s.close(linger=0)
            self.ctx.term()
            for fd in self._fds:
                os.close(fd)
            self._fds = []

    async def _recv(self, sock: zmq.asyncio.Socket, timeout: float | None) -> dict | None:
        try:
            if not await sock.poll(None if timeout is None else int(max(timeout, 0) * 1000)):
                return None
            parts = await sock.recv_multipart()
        except zmq.ZMQError as exc:
            raise SandboxError(f"Lost the connection to the sandbox kernel ({exc}); restart the sandbox.") from exc
        return self._decode(parts)

    def _recv_nowait(self, sock: zmq.Socket) -> dict | None:
        """The next message already queued, or None (synchronous: draining a burst fast keeps the small
        receive queue from overflowing)."""
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise SandboxError(f"Lost the connection to the sandbox kernel ({exc}); restart the sandbox.") from exc
        return self._decode(parts)

    def _decode(self, parts: list[bytes]) -> dict:
        size = sum(len(p) for p in parts)
        try:
            _, parts = self.session.feed_identities(parts)
            msg = self._unpack(parts)
            if not isinstance(msg["header"], dict) or not isinstance(msg["parent_header"], dict) \
                    or not isinstance(msg["content"], dict):
                raise TypeError("not a Jupyter message")
        except (ValueError, KeyError, TypeError, IndexError):  # a malformed or unsigned message: ignore it
            msg = {"header": {"msg_type": "invalid"}, "parent_header": {}, "content": {}}
        msg["size"] = size  # every frame as received: data, metadata, transient, buffers, whatever the shape
        return msg

    def _unpack(self, parts: list[bytes]) -> dict:
        """Session.deserialize without its date parsing (a third of the client's time per message)."""
        sig, header, parent, metadata, content = parts[:5]
        if self.session.auth is not None and not hmac.compare_digest(sig, self.session.sign(parts[1:5])):
            raise ValueError("invalid signature")
        return {"header": json.loads(header), "parent_header": json.loads(parent),
                "metadata": json.loads(metadata), "content": json.loads(content)}

    async def wait_ready(self, timeout: float, died: asyncio.Future) -> None:
        """Until the kernel answers kernel_info and iopub is subscribed (no message lost after this)."""
        deadline = time.monotonic() + timeout
        if not self._connected:
            await self._connect(deadline, died)
        got_reply = got_iopub = False
        msg_id = None
        while not (got_reply and got_iopub):
            if died.done():
                raise SandboxError("The sandbox kernel exited while starting; see its log (Sandbox.log()).")
            if time.monotonic() > deadline:
                raise SandboxError(f"The sandbox kernel did not answer within {timeout:.0f} s; see Sandbox.log().")
            if msg_id is None or (got_reply and not got_iopub):
                msg = self.session.msg("kernel_info_request", {})
                msg_id = msg["header"]["msg_id"]
                self.session.send(self.shell, msg)
            rep = await self._recv(self.shell, 0.02)
            if rep is not None and rep["parent_header"].get("msg_id") == msg_id:
                got_reply = True
            while True:
                m = await self._recv(self.iopub, 0.0 if got_iopub else 0.02)
                if m is None:
                    break
                got_iopub = True
        self._start_drain()

    async def interrupt(self) -> None:
        self.session.send(self.control, self.session.msg("interrupt_request", {}))

    def send_execute(self, code: str, store_history: bool = True) -> str:
        if self._drain is not None:
            self._drain.cancel()  # now, before the request goes out: none of this cell's output is drained
        msg = self.session.msg("execute_request", {
            "code": code, "silent": False, "store_history": store_history, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True,
        })
        self.session.send(self.shell, msg)
        return msg["header"]["msg_id"]

    # -- between runs, iopub is drained (and dropped), so an idle sandbox's flood never sits in our memory --
    def _start_drain(self) -> None:
        if not self._closed and (self._drain is None or self._drain.done()):
            self._drain = asyncio.ensure_future(self._drain_loop())

    async def _stop_drain(self) -> None:
        task, self._drain = self._drain, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _drain_loop(self) -> None:
        while not self._closed:
            try:
                if not await self.iopub.poll(1000):
                    continue
                for _ in range(1000):
                    self._iopub_sync.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:  # drained
                pass
            except zmq.ZMQError:  # closed
                return
            await asyncio.sleep(0)

    async def collect(self, msg_id: str, col: Collected, deadline: float, died: asyncio.Future,
                      abort: Callable[[], bool] = lambda: False) -> str:
        """Gather ``msg_id``'s output into ``col`` (see ``_collect``); iopub is drained again afterwards."""
        await self._stop_drain()
        try:
            return await self._collect(msg_id, col, deadline, died, abort)
        finally:
            self._start_drain()

    async def _collect(self, msg_id: str, col: Collected, deadline: float, died: asyncio.Future,
                       abort: Callable[[], bool] = lambda: False) -> str:
        """Gather ``msg_id``'s output into ``col``; returns how it ended: "done", "timeout", "died" or
        "abort" (``abort()`` is asked every 0.1 s at most, e.g. whether the pids limit was hit)."""
        reply_at: float | None = None
        heard = time.monotonic()  # when iopub last had something for us
        ask_at = heard  # when abort() is asked next (it reads a cgroup file: not once per message)
        while not (col.reply and col.idle):
            now = time.monotonic()
            if died.done():
                return "died"
            if now >= ask_at:
                if abort():
                    return "abort"
                ask_at = now + 0.1
            if reply_at is not None and now - max(reply_at, heard) > 0.5:
                break  # the idle status was lost (e.g. an over-size message reset iopub): the reply suffices
            if now >= deadline:
                return "timeout"
            wait = min(deadline - now, 0.1)
            try:
                ready = dict(await self._poller.poll(int(wait * 1000) + 1))
            except zmq.ZMQError as exc:
                raise SandboxError(f"Lost the connection to the sandbox kernel ({exc}).") from exc
            if self.iopub in ready:
                heard = time.monotonic()
                for _ in range(1000):  # then look at the clock again: a flood must not outlast the deadline
                    m = self._recv_nowait(self._iopub_sync)
                    if m is None:
                        break
                    if m["parent_header"].get("msg_id") == msg_id:
                        self._take(m, col)
                    elif m["header"].get("msg_type") not in ("status", "execute_input"):
                        col.count_other(m["size"])  # another cell's (a thread's) output still uses this run's budget
            if self.shell in ready:
                while True:
                    rep = await self._recv(self.shell, 0)
                    if rep is None:
                        break
                    if rep["parent_header"].get("msg_id") != msg_id:
                        continue
                    col.take_reply(rep["content"])
                    reply_at = time.monotonic()
        return "done"

    @staticmethod
    def _take(m: dict, col: Collected) -> None:
        """One iopub message of this run into ``col``: an output costs its message's size less the envelope's (a
        stream at least its text), anything else not kept (a comm message) its whole size."""
        t, c = m["header"].get("msg_type"), m["content"]
        size = m["size"]
        if t in OUTPUT_KINDS:
            size -= _OVERHEAD
            if t == "stream":
                text = c.get("text", "")
                size = max(len(text if isinstance(text, str) else str(text)), size)
        col.feed(t, c, size)


def new_key() -> str:
    return uuid.uuid4().hex


__all__ = ["Collected", "KernelClient", "connection_info", "new_key"]
