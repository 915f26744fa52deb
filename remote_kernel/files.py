"""Files between the notebook and a session's work directory on its GPU host.

``upload(session, "data/")`` and ``download(session, "results.csv")`` move files in chunks over the kernel's
variables channel (raw ZMQ frames, no pickling of the data): a big file never sits whole in either side's
memory, a file whose content hash the host already has is not sent again, a part file is put in place only
once its hash checks out, and ``progress(done, total)`` is called as bytes move. Paths on the host are
relative to the session's work directory (the kernel's current directory).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import aclosing
from dataclasses import dataclass
from typing import Callable

from burstlab import _sync
from burstlab.errors import TransferError

from ._kernel_side import file_sha256

CHUNK = 8 << 20
WINDOW = 4  # chunks sent ahead of their acknowledgements (a round trip per window, not per chunk)


@dataclass(frozen=True)
class Transfer:
    """What one upload or download did."""

    files: int  # files looked at
    sent: int  # files that travelled (the others were unchanged)
    bytes: int  # bytes that travelled

    def __str__(self) -> str:
        unchanged = self.files - self.sent
        return (f"{self.sent} file{'s' if self.sent != 1 else ''} ({_size(self.bytes)})"
                + (f", {unchanged} unchanged" if unchanged else ""))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _read_hashed(f, h) -> bytes:
    chunk = f.read(CHUNK)
    h.update(chunk)
    return chunk


def _write_hashed(f, h, chunk) -> None:
    f.write(chunk)
    h.update(chunk)


async def _chunks(loop, local: str, remote: str, size: int):
    """``write`` requests for one file: each chunk read and hashed off the loop while the one before travels."""
    h = hashlib.sha256()
    with open(local, "rb") as f:
        offset = 0
        ahead = loop.run_in_executor(None, _read_hashed, f, h)
        try:
            while True:
                chunk = await ahead
                final = len(chunk) < CHUNK or offset + len(chunk) >= size
                digest = h.hexdigest() if final else ""
                ahead = None if final else loop.run_in_executor(None, _read_hashed, f, h)
                yield "write", {"path": remote, "offset": offset, "final": final, "sha256": digest}, [chunk]
                offset += len(chunk)
                if final:
                    return
        finally:
            if ahead is not None:  # stopped early: the read ahead ends before the file closes
                await asyncio.wait([ahead])


async def _reads(remote: str, size: int):
    for offset in range(0, size, CHUNK):
        yield "read", {"path": remote, "offset": offset, "size": CHUNK}, []


def _pairs_up(local: str, remote: str) -> list[tuple[str, str]]:
    if os.path.isdir(local):
        return [(os.path.join(d, f), os.path.join(remote, os.path.relpath(os.path.join(d, f), local)))
                for d, _, fs in sorted(os.walk(local)) for f in sorted(fs)]
    if not os.path.isfile(local):
        raise TransferError(f"{local} does not exist here: nothing to upload.")
    return [(local, remote)]


async def aupload(session, path: str, to: str | None = None, *,
                  progress: Callable[[int, int], None] | None = None) -> Transfer:
    """Put ``path`` (a file or a folder) into the session's work directory, as ``to`` (default: its name)."""
    kernel = session.kernel
    loop = asyncio.get_running_loop()
    name = os.path.basename(os.path.normpath(path))
    remote_root = os.path.join(to, name) if to and to.endswith("/") else (to or name)
    pairs = _pairs_up(path, remote_root)
    total = sum(os.path.getsize(p) for p, _ in pairs)
    done = sent = 0
    for local, remote in pairs:
        size = os.path.getsize(local)
        info, _ = await kernel.file_op("stat", {"path": remote})
        if info.get("kind") == "file" and info.get("size") == size:  # the same size: compare content hashes
            theirs, _ = await kernel.file_op("stat", {"path": remote, "hash": True})
            if theirs.get("sha256") == await loop.run_in_executor(None, file_sha256, local):
                total -= size
                continue
        async with aclosing(_chunks(loop, local, remote, size)) as source, \
                aclosing(kernel.file_ops(source, window=WINDOW)) as replies:
            async for reply, _ in replies:
                done += reply["written"]
                if progress is not None:
                    progress(done, total)
        sent += 1
    return Transfer(files=len(pairs), sent=sent, bytes=done)


async def adownload(session, path: str, to: str | None = None, *,
                    progress: Callable[[int, int], None] | None = None) -> Transfer:
    """Fetch ``path`` (a file or a folder in the session's work directory) to ``to`` here (default: its name)."""
    kernel = session.kernel
    loop = asyncio.get_running_loop()
    local_root = to or os.path.basename(os.path.normpath(path))
    info, _ = await kernel.file_op("stat", {"path": path})
    if info["kind"] == "absent":
        raise TransferError(f"{path} does not exist in the {session.label} session's work directory on "
                            f"{session.host}.")
    names = [(os.path.join(path, f), os.path.join(local_root, f)) for f in info["files"]] \
        if info["kind"] == "dir" else [(path, local_root)]
    stats = [(await kernel.file_op("stat", {"path": r, "hash": True}))[0] for r, _ in names]
    total = sum(s["size"] for s in stats)
    done = sent = 0
    for (remote, local), st in zip(names, stats):
        if os.path.isfile(local) and os.path.getsize(local) == st["size"] \
                and await loop.run_in_executor(None, file_sha256, local) == st["sha256"]:
            total -= st["size"]
            continue
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        part = local + ".burstlab-part"
        h = hashlib.sha256()
        reads = _reads(remote, st["size"])
        with open(part, "wb") as f:
            behind = None
            try:
                async with aclosing(kernel.file_ops(reads, window=WINDOW)) as replies:
                    async for _, buffers in replies:
                        chunk = buffers[0]
                        if not len(chunk):
                            break
                        if behind is not None:
                            await behind
                        behind = loop.run_in_executor(None, _write_hashed, f, h, chunk)  # beside the next reads
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            finally:
                if behind is not None:
                    await asyncio.wait([behind])
            if behind is not None:
                behind.result()
        if h.hexdigest() != st["sha256"]:
            os.unlink(part)
            raise TransferError(f"{remote} changed on {session.host} while it was downloaded; download it again.")
        os.replace(part, local)
        sent += 1
    return Transfer(files=len(names), sent=sent, bytes=done)


def upload(session, path: str, to: str | None = None, *, progress=None) -> Transfer:
    """Blocking twin of :func:`aupload`."""
    return _sync.run_sync(aupload(session, path, to, progress=progress))


def download(session, path: str, to: str | None = None, *, progress=None) -> Transfer:
    """Blocking twin of :func:`adownload`."""
    return _sync.run_sync(adownload(session, path, to, progress=progress))


__all__ = ["Transfer", "adownload", "aupload", "download", "upload"]
