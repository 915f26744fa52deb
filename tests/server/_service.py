"""A real standalone service (``jupyter burstlab``) in a subprocess, for tests that drive it over HTTP.

``with standalone_service(tmp) as svc:`` starts it on a free port with a tokens file of two users
(``svc.tokens["alice"]``, ``svc.tokens["bob"]``) and stops it (SIGTERM, then SIGKILL of its group).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Service:
    url: str
    tokens: dict[str, str]
    proc: subprocess.Popen
    log_path: str
    home: str
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def standalone_service(home: str, users=("alice", "bob"), extra_args=(), timeout: float = 60):
    from burstlab.client import Workspace
    from burstlab.errors import BurstlabError

    os.makedirs(home, exist_ok=True)
    tokens = {u: secrets.token_hex(24) for u in users}
    tokens_file = os.path.join(home, "tokens.json")
    with open(tokens_file, "w") as f:
        json.dump({t: u for u, t in tokens.items()}, f)
    port = free_port()
    env = {**os.environ, "BURSTLAB_HOME": home}
    env.pop("BURSTLAB_URL", None)
    env.pop("BURSTLAB_TOKEN", None)
    log_path = os.path.join(home, "service.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "burstlab", f"--port={port}", "--ip=127.0.0.1", f"--tokens-file={tokens_file}",
         "--BurstLab.heartbeat_interval=0.5", *extra_args],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home,
    )
    svc = Service(f"http://127.0.0.1:{port}/", tokens, proc, log_path, home, env)
    try:
        deadline = time.monotonic() + timeout
        with Workspace(svc.url, tokens[users[0]]) as ws:
            while True:
                try:
                    ws.info()
                    break
                except BurstlabError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"jupyter burstlab did not come up:\n{svc.log()[-4000:]}") from None
                    time.sleep(0.1)
        yield svc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
