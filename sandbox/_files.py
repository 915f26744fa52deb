"""Files in and out of a sandbox's work dir, confined to it.

The supervisor runs as root and the work dir belongs to code we do not trust, so every path is
walked one component at a time from a descriptor of the work dir with ``O_NOFOLLOW``: a symlink
anywhere on the way, ``..``, an absolute path, a FIFO, a device, a socket or a file with more than
one hard link is refused, whatever the sandbox does to the tree meanwhile. Writes go to a fresh
temporary name and are renamed into place, so they never write through an existing link.
"""

from __future__ import annotations

import os
import stat
import uuid

from burstlab.errors import SandboxError, SandboxFileNotFound, SandboxLimitError

from ._limits import format_size

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(path: str) -> list[str]:
    """The components of a relative path inside the work dir; refuses anything that could leave it.

    >>> split_path("a/b.txt")
    ['a', 'b.txt']
    >>> split_path("./a//b")
    ['a', 'b']
    """
    if not isinstance(path, str) or path == "":
        raise SandboxError(f"path={path!r}: give a relative path inside the work dir, e.g. \"data.csv\" or \"out/plot.png\".")
    if "\x00" in path:
        raise SandboxError("path contains a NUL byte; give a plain relative path.")
    if path.startswith("/"):
        raise SandboxError(f"path={path!r} is absolute; paths are relative to the sandbox's work dir, e.g. \"data.csv\".")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SandboxError(f"path={path!r} contains '..'; paths must stay inside the sandbox's work dir.")
    return parts


class SandboxFiles:
    """``sb.files``: read, write, list and remove files in the sandbox's work dir."""

    def __init__(self, root: str, uid: int, gid: int, max_upload: int, max_download: int) -> None:
        self._root = root
        self._uid, self._gid = uid, gid
        self.max_upload = max_upload
        self.max_download = max_download
        self._watcher = None  # set by the sandbox: (path, timeout) -> a _watch.Watch

    def watch(self, path: str = ".", timeout: float | None = None):
        """Create / modify / delete events under ``path`` (and its subdirectories), from inotify inside the
        sandbox, as dicts ``{"event", "path", "dir"}``: ``for ev in sb.files.watch("."): ...``, or
        ``w.get(timeout)``; ``close()`` it (or use ``with``) to stop. ``timeout``: stop after that many seconds."""
        if self._watcher is None:
            raise SandboxError("files.watch needs a started sandbox.")
        return self._watcher(path, timeout)

    def _open_dir(self, parts: list[str], create: bool = False) -> int:
        fd = os.open(self._root, _DIR_FLAGS)
        try:
            for name in parts:
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    os.chown(name, self._uid, self._gid, dir_fd=fd, follow_symlinks=False)
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise SandboxError(f"{'/'.join(parts)!r}: {name!r} is not a plain directory (a symlink or a file); refused.") from exc
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def read(self, path: str) -> bytes:
        parts = split_path(path)
        if not parts:
            raise SandboxError("files.read needs a file name, not the work dir itself.")
        try:
            dfd = self._open_dir(parts[:-1])
        except FileNotFoundError:
            raise SandboxFileNotFound(f"{path!r} does not exist in the sandbox's work dir.") from None
        try:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dfd)
            except FileNotFoundError:
                raise SandboxFileNotFound(f"{path!r} does not exist in the sandbox's work dir.") from None
            except OSError as exc:
                raise SandboxError(f"{path!r} is a symlink or cannot be opened ({exc.strerror}); only regular files can be read.") from exc
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SandboxError(f"{path!r} is not a regular file (a directory, FIFO, socket or device); refused.")
            if st.st_nlink > 1:
                raise SandboxError(f"{path!r} has {st.st_nlink} hard links; files with more than one link are refused.")
            if st.st_size > self.max_download:
                raise SandboxLimitError(
                    f"{path!r} is {format_size(st.st_size)}, over the download limit of {format_size(self.max_download)}; "
                    "raise it with Sandbox(max_download=...) or compress the file inside the sandbox."
                )
            chunks, total = [], 0
            while True:
                chunk = os.read(fd, min(1 << 20, self.max_download + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > self.max_download:
                    raise SandboxLimitError(f"{path!r} grew past the download limit of {format_size(self.max_download)} while being read.")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes | str) -> int:
        """Write ``data`` (str is UTF-8 encoded) to ``path``, creating parent dirs; returns the bytes written."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SandboxError(f"files.write takes bytes or str, not {type(data).__name__}.")
        if len(data) > self.max_upload:
            raise SandboxLimitError(
                f"{len(data):,} bytes is over the upload limit of {format_size(self.max_upload)}; "
                "raise it with Sandbox(max_upload=...) or send the data in parts."
            )
        parts = split_path(path)
        if not parts:
            raise SandboxError("files.write needs a file name, not the work dir itself.")
        dfd = self._open_dir(parts[:-1], create=True)
        tmp = f".burstlab-upload-{uuid.uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                os.fchown(fd, self._uid, self._gid)
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            except OSError as exc:
                os.unlink(tmp, dir_fd=dfd)
                if exc.errno == 28:
                    raise SandboxLimitError("The sandbox's work dir is full; remove files or create it with a larger work_size.") from exc
                raise
            finally:
                os.close(fd)
            try:
                os.rename(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError as exc:
                os.unlink(tmp, dir_fd=dfd)
                raise SandboxError(f"{path!r} cannot be replaced ({exc.strerror}); is it a directory?") from exc
        finally:
            os.close(dfd)
        return len(data)

    def list(self, path: str = ".") -> list[dict]:
        """Entries of a directory: name, type ("file", "dir", "symlink", "other") and size."""
        try:
            dfd = self._open_dir(split_path(path) if path not in (".", "") else [])
        except FileNotFoundError:
            raise SandboxFileNotFound(f"{path!r} does not exist in the sandbox's work dir.") from None
        try:
            out = []
            for name in sorted(os.listdir(dfd)):
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                        else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
                out.append({"name": name, "type": kind, "size": st.st_size})
            return out
        finally:
            os.close(dfd)

    def remove(self, path: str) -> None:
        parts = split_path(path)
        if not parts:
            raise SandboxError("files.remove needs a file name, not the work dir itself.")
        dfd = self._open_dir(parts[:-1])
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(parts[-1], dir_fd=dfd)
            else:
                os.unlink(parts[-1], dir_fd=dfd)
        except FileNotFoundError:
            raise SandboxFileNotFound(f"{path!r} does not exist in the sandbox's work dir.") from None
        finally:
            os.close(dfd)


__all__ = ["SandboxFiles", "split_path"]
