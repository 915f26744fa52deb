"""Talking the Jupyter protocol to a remote kernel, from the notebook's side.

``RemoteKernel`` is the async core: execute a cell (outputs delivered as they arrive), interrupt
it, and push/pull variables over a comm with out-of-band buffers. ZMQ and jupyter_client errors are
translated into burstlab's here and nowhere else.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
import uuid
from typing import Any, Callable

import zmq
from jupyter_client.asynchronous import AsyncKernelClient

from burstlab._collect import OutputCollector, limit_marker, output_size
from burstlab.errors import SessionLostError, TransferError
from burstlab.wire import OUTPUT_KINDS, Execution, Output

from . import _curve
from ._kernel_side import FRAME, TARGET, dumps, join_frames, split_frames

OUTPUT_TYPES = OUTPUT_KINDS  # the one list, in burstlab.wire
OUTPUT_LIMIT = 16 * 1024**2  # bytes of output one execution keeps (data, metadata and transient all count)
# Messages queued in this process, not yet read (ZMQ's default is 1000: a kernel flooding 3 MiB displays made
# the notebook's side hold hundreds of MiB while it caught up); past it the backlog waits in the kernel's process.
RECEIVE_QUEUE = 32


def to_output(msg: dict) -> Output | None:
    """An iopub message as an :class:`Output`, or None if it is not an output."""
    return Output.from_message(msg["header"]["msg_type"], msg["content"])


class _Collector(OutputCollector):
    """burstlab's one iopub collector (``burstlab._collect``) over jupyter_client's message dicts: outputs measured
    by their content, the one that crosses the limit cut and followed by one marker."""

    def __init__(self, on_output: Callable[[Output], Any] | None, limit: int = OUTPUT_LIMIT):
        super().__init__(limit, on_output)

    def feed(self, msg: dict) -> bool:  # type: ignore[override]
        """Take one iopub message of this execution; True once the kernel is idle again."""
        return super().feed(msg["header"]["msg_type"], msg["content"])

    def finish(self, reply: dict | None) -> Execution:
        if reply:
            self.take_reply(reply["content"])
        return self.execution()


class RemoteKernel:
    """An async Jupyter-protocol client of one remote kernel.

    ``is_alive`` is a callable answering whether the kernel's lease still holds; while waiting for
    output the client checks it every ``liveness_s`` seconds and raises SessionLostError if not.
    """

    def __init__(self, connection_info: dict, is_alive: Callable[[], bool] = lambda: True, liveness_s: float = 0.5,
                 output_limit: int = OUTPUT_LIMIT):
        self.output_limit = output_limit
        self.kc = AsyncKernelClient()
        self.kc.context.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)  # this client's own context: its sockets only
        _curve.secure_context(self.kc.context, connection_info)  # the kernel's ports speak Curve only (_curve.py)
        self._frame = FRAME if _curve.encrypted(connection_info) else 0  # how transfers cut large buffers
        if _curve.exposed(connection_info):  # a host configured (or too old) to serve it in the clear: say so
            sys.stderr.write(_curve.exposed_note(connection_info))
        self.kc.load_connection_info(connection_info)
        self.kc.start_channels(hb=False, stdin=False)
        self._is_alive = is_alive
        self._liveness_s = liveness_s
        self._lock = asyncio.Lock()
        self._comm_id: str | None = None
        self._here: HereClient | None = None
        self._here_thread = 0
        self._connection = connection_info

    def in_use(self) -> bool:
        """Whether an execute or a transfer holds the kernel now (through the async client)."""
        return self._lock.locked()

    def here(self) -> HereClient | None:
        """The blocking client for the calling thread: made on the first call, None for any other
        thread (which uses the async client)."""
        me = threading.get_ident()
        if self._here is None:
            self._here = HereClient(self._connection, self._is_alive, self._liveness_s, self.output_limit)
            self._here_thread = me
        return self._here if self._here_thread == me else None

    async def _next_iopub(self, parent_id: str, deadline: float | None) -> dict:
        while True:
            wait = self._liveness_s if deadline is None else min(self._liveness_s, deadline - time.monotonic())
            if deadline is not None and wait <= 0:
                raise TimeoutError("no reply from the remote kernel in time")
            try:
                msg = await self.kc.get_iopub_msg(timeout=wait)
            except queue.Empty:
                if not self._is_alive():
                    raise SessionLostError("The remote kernel died; its state is gone.") from None
                continue
            except zmq.ZMQError as exc:
                raise SessionLostError(f"Lost the connection to the remote kernel: {exc}") from exc
            if msg["parent_header"].get("msg_id") == parent_id:
                return msg

    async def execute(self, code: str, on_output: Callable[[Output], Any] | None = None, silent: bool = False) -> Execution:
        """Run ``code``; ``on_output`` is called with each output as it arrives."""
        async with self._lock:
            collect = _Collector(on_output, self.output_limit)
            msg_id = self.kc.execute(code, silent=silent, store_history=not silent, allow_stdin=False)
            while not collect.feed(await self._next_iopub(msg_id, None)):
                pass
            # The shell reply follows idle (or precedes it); collect it so the channel stays in step.
            return collect.finish(await self._shell_reply(msg_id))

    async def _shell_reply(self, msg_id: str, timeout: float = 10.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                if not self._is_alive():
                    raise SessionLostError("The remote kernel died; its state is gone.") from None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
        return None

    async def interrupt(self) -> None:
        """Interrupt the running cell (message mode: works whatever host the kernel is on)."""
        msg = self.kc.session.msg("interrupt_request", {})
        self.kc.control_channel.send(msg)

    async def _comm(self) -> str:
        if self._comm_id is None:
            self._comm_id = uuid.uuid4().hex
            msg = self.kc.session.msg("comm_open", {"comm_id": self._comm_id, "target_name": TARGET, "data": {}})
            self.kc.shell_channel.send(msg)
        return self._comm_id

    async def _comm_request(self, data: dict, buffers: list, timeout: float) -> dict:
        comm_id = await self._comm()
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.session.send(self.kc.shell_channel.socket, msg, buffers=buffers)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = await self._next_iopub(msg["header"]["msg_id"], deadline)
            except TimeoutError as exc:
                raise TransferError(f"The remote kernel did not answer the transfer within {timeout:.0f} s "
                                    "(is a cell still running there? interrupt it first).") from exc
            if reply["header"]["msg_type"] != "comm_msg":
                continue
            content = reply["content"]["data"]
            if content.get("req") != data["req"]:
                continue
            if content["op"] == "error":
                raise TransferError(f"{content['ename']}: {content['evalue']}")
            reply["content"]["data"] = content
            return reply

    async def push(self, values: dict[str, Any], timeout: float = 300.0) -> None:
        """Set ``values`` (name -> object) in the remote kernel's namespace."""
        payload, buffers = dumps(values)
        frames, counts = split_frames([payload, *buffers], self._frame)  # encrypted: cipher and link overlap
        async with self._lock:
            await self._comm_request({"op": "push", "req": uuid.uuid4().hex, "frames": counts}, frames, timeout)

    async def pull(self, names: list[str], timeout: float = 300.0) -> dict[str, Any]:
        """Fetch the named variables from the remote kernel."""
        import pickle

        async with self._lock:
            reply = await self._comm_request({"op": "pull", "req": uuid.uuid4().hex, "names": list(names),
                                              "frame": self._frame}, [], timeout)
        buffers = join_frames(reply.get("buffers") or [], reply["content"]["data"].get("frames"))
        try:
            return pickle.loads(buffers[0], buffers=buffers[1:])
        except Exception as exc:
            raise TransferError(f"Pulled {', '.join(names)} but could not unpickle here: {type(exc).__name__}: {exc} "
                                "(is the same library installed in this notebook's environment?)") from exc

    async def file_op(self, op: str, args: dict, buffers: list | None = None,
                      timeout: float = 300.0) -> tuple[dict, list[memoryview]]:
        """A file operation in the kernel's work directory (``stat``, ``write``, ``read``: see
        ``_kernel_side``), over the variables channel: returns the reply's fields and buffers."""
        async with self._lock:
            reply = await self._comm_request({"op": op, "req": uuid.uuid4().hex, **args}, list(buffers or []), timeout)
        return reply["content"]["data"], [memoryview(b) for b in reply.get("buffers") or []]

    async def file_ops(self, requests, window: int = 4, timeout: float = 300.0):
        """File operations from the async iterator ``requests`` (``(op, args, buffers)``), with up to
        ``window`` sent ahead of their replies (a transfer pays no round trip per chunk). An async generator of
        each reply's ``(fields, buffers)``, in order; the first error raises TransferError (use it inside
        ``contextlib.aclosing``)."""
        async with self._lock:
            comm_id = await self._comm()
            ahead: dict[str, str] = {}  # msg id -> req, in the order sent
            replies: dict[str, dict] = {}
            source = requests.__aiter__()
            more = True
            while True:
                while more and len(ahead) < window:
                    try:
                        op, args, buffers = await source.__anext__()
                    except StopAsyncIteration:
                        more = False
                        break
                    req = uuid.uuid4().hex
                    msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"op": op, "req": req, **args}})
                    self.kc.session.send(self.kc.shell_channel.socket, msg, buffers=list(buffers or []))
                    ahead[msg["header"]["msg_id"]] = req
                if not ahead:
                    return
                first = next(iter(ahead))
                deadline = time.monotonic() + timeout
                while first not in replies:
                    try:
                        msg = await self.kc.get_iopub_msg(timeout=max(0.01, min(self._liveness_s,
                                                                                deadline - time.monotonic())))
                    except queue.Empty:
                        if time.monotonic() >= deadline:
                            raise TransferError(f"The remote kernel did not answer the transfer within {timeout:.0f} s "
                                                "(is a cell still running there? interrupt it first).") from None
                        if not self._is_alive():
                            raise SessionLostError("The remote kernel died; its state is gone.") from None
                        continue
                    except zmq.ZMQError as exc:
                        raise SessionLostError(f"Lost the connection to the remote kernel: {exc}") from exc
                    parent = msg["parent_header"].get("msg_id")
                    if parent in ahead and msg["header"]["msg_type"] == "comm_msg" \
                            and msg["content"]["data"].get("req") == ahead[parent]:
                        replies[parent] = msg
                del ahead[first]
                reply = replies.pop(first)
                content = reply["content"]["data"]
                if content["op"] == "error":
                    raise TransferError(f"{content['ename']}: {content['evalue']}")
                yield content, [memoryview(b) for b in reply.get("buffers") or []]

    async def aclose(self) -> None:
        """Close the channels once no request is in flight (an in-flight one notices the death first)."""
        async with self._lock:
            self.kc.stop_channels()
            if self._here is not None:
                self._here.close()


class HereClient:
    """A blocking client of the same kernel, used only from the thread that made it (a notebook
    cell's): a warm ``%%gpu`` cell runs with no hand-off between threads, the way a raw
    jupyter_client call in a cell does. Outputs reach ``on_output`` on that thread as they arrive.
    Ctrl-C (KeyboardInterrupt in that thread) is forwarded as an ``interrupt_request``."""

    def __init__(self, connection_info: dict, is_alive: Callable[[], bool], liveness_s: float,
                 output_limit: int = OUTPUT_LIMIT):
        from jupyter_client.blocking import BlockingKernelClient

        self.output_limit = output_limit
        self.kc = BlockingKernelClient()
        self.kc.context.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
        _curve.secure_context(self.kc.context, connection_info)
        self.kc.load_connection_info(connection_info)
        self.kc.start_channels(hb=False, stdin=False)
        self._is_alive = is_alive
        self._liveness_s = liveness_s

    def _get(self, get: Callable[..., dict], parent_id: str) -> dict:
        while True:
            try:
                msg = get(timeout=self._liveness_s)
            except KeyboardInterrupt:  # each Ctrl-C is forwarded; the cell ends when the kernel says so
                self.kc.control_channel.send(self.kc.session.msg("interrupt_request", {}))
                continue
            except queue.Empty:
                if not self._is_alive():
                    raise SessionLostError("The remote kernel died; its state is gone.") from None
                continue
            except zmq.ZMQError as exc:
                raise SessionLostError(f"Lost the connection to the remote kernel: {exc}") from exc
            if msg["parent_header"].get("msg_id") == parent_id:
                return msg

    def execute(self, code: str, on_output: Callable[[Output], Any] | None = None) -> Execution:
        collect = _Collector(on_output, self.output_limit)
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False)
        while not collect.feed(self._get(self.kc.get_iopub_msg, msg_id)):
            pass
        return collect.finish(self._get(self.kc.get_shell_msg, msg_id))

    def close(self) -> None:
        self.kc.stop_channels()


__all__ = ["OUTPUT_LIMIT", "HereClient", "RemoteKernel", "limit_marker", "output_size", "to_output"]
