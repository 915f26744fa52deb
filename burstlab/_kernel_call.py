"""Run set-up code on a kernel and wait for its reply: the GPU host's pool kernels (``remote_kernel/pool.py``) and
jailed session kernels (``sandbox/_served.py``) use it before a kernel is handed out."""

from __future__ import annotations

import time
from typing import Callable


def run_setup(kc, code: str, timeout: float, alive: Callable[[], bool], tail: Callable[[], str],
              who: str = "kernel") -> None:
    """Execute ``code`` silently on the started client ``kc`` and wait for its reply. RuntimeError, naming ``who``,
    if the kernel dies or does not answer within ``timeout`` seconds (with ``tail()``, its log) or the code fails."""
    msg_id = kc.execute(code, silent=True, store_history=False)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not alive():
            raise RuntimeError(f"{who} did not run its set-up code: {tail()}")
        try:
            reply = kc.get_shell_msg(timeout=min(remaining, 0.5))
        except Exception:  # noqa: BLE001 - queue.Empty: not ready yet
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"{who}'s set-up failed: {reply['content'].get('evalue')}")
            return


__all__ = ["run_setup"]
