"""The seccomp filter: which syscalls a sandboxed interpreter may not make, compiled with libseccomp.

Policy (``DENIED``, ``NAMESPACE_FLAGS``) is plain data; ``Filter`` is the small ctypes layer over
libseccomp2 (Debian's ``libseccomp2``). The filter is built once in the fork-server template and
loaded in each sandbox just before the kernel starts (``load`` applies it to the calling thread,
which is the only thread then). Denied calls fail with EPERM, so the interpreter sees an ordinary
``PermissionError`` rather than dying; ``clone3`` fails with ENOSYS so glibc falls back to ``clone``,
whose flags the filter can inspect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno

from burstlab.errors import SandboxError

# The kernel surface an interpreter does not need. Names libseccomp cannot resolve on this
# architecture are skipped.
DENIED: tuple[str, ...] = (
    # debugging / reading other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # file systems and namespaces
    "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "quotactl_fd", "swapon", "swapoff",
    # kernel objects with a history of bugs
    "bpf", "userfaultfd", "perf_event_open", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "fanotify_init",
    # the machine
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
    "reboot", "acct", "syslog", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "uselib", "vhangup", "lookup_dcookie", "nfsservctl", "sysfs", "_sysctl",
    "personality",
)

# clone() with any of these flags is refused: no new namespaces from inside.
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080,
}

_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7


def _act_errno(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SandboxError(
            "libseccomp is not installed, so the sandbox cannot filter syscalls. "
            "Install it with `apt-get install libseccomp2` (Debian/Ubuntu) or `dnf install libseccomp`."
        ) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


class Filter:
    """A compiled deny-list filter; ``load()`` applies it to the calling thread and its future children."""

    def __init__(self, denied: tuple[str, ...] = DENIED) -> None:
        self._lib = _lib()
        ctx = self._lib.seccomp_init(_ACT_ALLOW)
        if not ctx:
            raise SandboxError("seccomp_init failed; is the kernel built with CONFIG_SECCOMP_FILTER?")
        self._ctx = ctx
        self.denied: list[str] = []
        eperm = _act_errno(errno.EPERM)
        for name in denied:
            nr = self._lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue
            self._add(eperm, nr)
            self.denied.append(name)
        clone = self._lib.seccomp_syscall_resolve_name(b"clone")
        for flag in NAMESPACE_FLAGS.values():
            cmp = _ArgCmp(0, _CMP_MASKED_EQ, flag, flag)
            self._add(eperm, clone, cmp)
        clone3 = self._lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            self._add(_act_errno(errno.ENOSYS), clone3)

    def _add(self, action: int, nr: int, *cmps: _ArgCmp) -> None:
        arr = (_ArgCmp * len(cmps))(*cmps) if cmps else None
        rc = self._lib.seccomp_rule_add_array(self._ctx, action, nr, len(cmps), arr)
        if rc < 0:
            raise SandboxError(f"seccomp_rule_add failed for syscall {nr} ({-rc}); libseccomp may be too old.")

    def load(self) -> None:
        rc = self._lib.seccomp_load(self._ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {errno.errorcode.get(-rc, rc)}")

    def export_bpf(self, fd: int) -> None:
        """Write the compiled BPF program to ``fd`` (the form ``bwrap --seccomp FD`` reads)."""
        rc = self._lib.seccomp_export_bpf(self._ctx, fd)
        if rc < 0:
            raise OSError(-rc, "seccomp_export_bpf failed")


__all__ = ["DENIED", "Filter", "NAMESPACE_FLAGS"]
