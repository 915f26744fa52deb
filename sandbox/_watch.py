"""``sb.files.watch(path)``: create / modify / delete events of the work dir, from inotify inside the jail.

A small watcher (``_WATCHER``, plain Python with ctypes) runs through ``Sandbox.exec``, so it is the sandbox's
own process (its uid, namespaces, cgroup, seccomp) and sees exactly what the sandbox sees. It watches ``path``
and every directory under it (new ones too), and prints one JSON line per event: ``{"event": "create" |
"modify" | "delete", "path": "<relative to the work dir>", "dir": bool}`` (``modify`` is a write that was closed:
``IN_CLOSE_WRITE``; a rename is a delete and a create). A new directory's create is reported once its own watch
is in place, followed by creates for what was made in it before (so one may be reported twice); events inside a
directory from before its watch existed cannot be seen (inotify's limit). The watcher is a process of
the sandbox: it counts against its pids and memory (~10 MiB). The supervisor parses the lines and yields them; closing
the iterator (or leaving the ``for``) kills the watcher. Events are dropped, not queued without bound, past
``MAX_QUEUE`` unread ones; inotify itself drops events past its queue (``/proc/sys/fs/inotify/max_queued_events``).
"""

from __future__ import annotations

import asyncio
import json
import queue
from typing import Callable, Iterator

from burstlab import _sync
from burstlab.errors import NotFoundError, SandboxError
from burstlab.wire import ExecResult, Output

from ._exec import run_command

MAX_QUEUE = 100_000

_WATCHER = r'''
import ctypes, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x2, 0x8, 0x40, 0x80, 0x100, 0x200
IN_ISDIR, IN_Q_OVERFLOW, IN_IGNORED = 0x40000000, 0x4000, 0x8000
MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
fd = libc.inotify_init1(0o2000000)
if fd < 0:
    sys.exit("inotify_init1: " + os.strerror(ctypes.get_errno()))
home = os.path.realpath(os.environ["HOME"])
top = os.path.realpath(os.path.join(home, sys.argv[1]))
if top != home and not top.startswith(home + "/"):
    sys.exit(f"watch: {sys.argv[1]!r} is outside the work dir")
if not os.path.isdir(top):
    print(f"watch: {sys.argv[1]!r} is not a directory of the work dir", file=sys.stderr, flush=True)
    sys.exit(3)  # NO_DIR
wds = {}
out = sys.stdout
def say(event, path, isdir):
    out.write(json.dumps({"event": event, "path": os.path.relpath(path, home), "dir": isdir}) + "\n")
def add(d, announce):
    wd = libc.inotify_add_watch(fd, d.encode(), MASK)
    if wd >= 0:
        wds[wd] = d
    if announce:  # a new dir is announced once its watch is in place, then what was made in it before
        say("create", d, True)
    for e in os.scandir(d):
        if e.is_dir(follow_symlinks=False):
            add(e.path, announce)
        elif announce:
            say("create", e.path, False)
add(top, False)
out.write("ready\n"); out.flush()
while True:
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        wd, mask, cookie, n = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + n].rstrip(b"\0").decode("utf-8", "surrogateescape")
        i += 16 + n
        if mask & IN_Q_OVERFLOW:
            out.write(json.dumps({"event": "overflow", "path": "", "dir": False}) + "\n")
            continue
        d = wds.get(wd)
        if d is None or mask & IN_IGNORED:
            wds.pop(wd, None)
            continue
        path, isdir = os.path.join(d, name), bool(mask & IN_ISDIR)
        if mask & (IN_CREATE | IN_MOVED_TO):
            if not isdir:
                say("create", path, False)
            else:
                try:
                    add(path, True)
                except OSError:
                    say("create", path, True)
        elif mask & IN_CLOSE_WRITE:
            say("modify", path, isdir)
        elif mask & (IN_DELETE | IN_MOVED_FROM):
            say("delete", path, isdir)
    out.flush()
'''


NO_DIR = 3  # the watcher's exit status when ``path`` is not a directory of the work dir


async def astream(sb, template, path: str, timeout: float | None, on_event: Callable[[dict], None],
                  stop: asyncio.Event) -> ExecResult:
    """Watch ``path`` of ``sb``'s work dir until ``stop`` is set or ``timeout`` seconds pass (None: no end), calling
    ``on_event`` (on burstlab's loop) with ``{"event": "ready", "path": path, "dir": True}`` once the watch is in
    place, then with each event. Returns the watcher's ExecResult (its stderr says why it did not start)."""
    if not isinstance(path, str) or "\0" in path:
        raise SandboxError("files.watch(path) takes a path relative to the work dir, e.g. \".\" or \"data\".")
    buf = [""]

    def on_output(o: Output) -> None:
        if o.name != "stdout":
            return
        buf[0] += o.text
        *lines, buf[0] = buf[0].split("\n")
        for line in lines:
            on_event({"event": "ready", "path": path, "dir": True} if line == "ready" else json.loads(line))

    result = await run_command(sb, template, ["python", "-S", "-c", _WATCHER, path], timeout or 10 * 365 * 86400,
                               on_output, stop=stop, limit=1 << 62, keep=False)
    if result.exit_code == NO_DIR:
        raise NotFoundError(f"files.watch({path!r}): it is not a directory of the sandbox's work dir; create it first, "
                            "or watch \".\".")
    return result


class Watch:
    """An iterator of event dicts; ``close()`` (or leaving a ``for`` over it) stops the watcher."""

    def __init__(self, sb, template, path: str, timeout: float | None) -> None:
        if not isinstance(path, str) or "\0" in path:
            raise SandboxError("files.watch(path) takes a path relative to the work dir, e.g. \".\" or \"data\".")
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._n = 0
        self._stop: asyncio.Event | None = None
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self.result = None
        self._future = _sync.submit(self._run(sb, template, path, timeout))
        first = self._ready.get(timeout=60)
        if first is not True:
            self._future.result(timeout=30)
            raise SandboxError(f"files.watch({path!r}) did not start: {first}")

    async def _run(self, sb, template, path: str, timeout: float | None):
        self._stop = asyncio.Event()

        def on_event(event: dict) -> None:
            if event["event"] == "ready":
                self._ready.put(True)
            elif self._n < MAX_QUEUE:
                self._n += 1
                self._q.put(event)

        try:
            r = await astream(sb, template, path, timeout, on_event, self._stop)
            self.result = r
            self._ready.put(r.stderr.strip() or f"exit code {r.exit_code}")
        except BaseException as exc:
            self._ready.put(str(exc))
            raise
        finally:
            self._q.put(None)

    def __iter__(self) -> "Iterator[dict]":
        return self

    def __next__(self) -> dict:
        if self._closed:
            raise StopIteration
        item = self._q.get()
        if item is None:
            self._closed = True
            raise StopIteration
        self._n -= 1
        return item

    def get(self, timeout: float) -> dict | None:
        """The next event, or None if none came within ``timeout`` seconds (or the watch ended)."""
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._q.put(None)
            return None
        self._n -= 1
        return item

    def close(self) -> None:
        if self._stop is not None and not self._future.done():
            _sync.loop().call_soon_threadsafe(self._stop.set)
            try:
                self._future.result(timeout=15)
            except Exception:  # noqa: BLE001 - the watcher is gone either way
                pass
        self._closed = True

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed and self._stop is not None:
            try:
                _sync.loop().call_soon_threadsafe(self._stop.set)
            except Exception:  # noqa: BLE001 - at exit the loop may be gone
                pass


__all__ = ["Watch"]
