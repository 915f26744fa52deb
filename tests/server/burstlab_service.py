"""Start a real ``jupyter burstlab`` process (for the tests that drive the standalone service over HTTP)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TOKENS = {"alice": "alice-token-" + "a" * 24, "bob": "bob-token-" + "b" * 24}
ADMIN_TOKEN = "admin-token-" + "c" * 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT/burstlab/api
    home: Path
    log: Path
    tokens: dict = field(default_factory=dict)

    def headers(self, user: str) -> dict:
        token = ADMIN_TOKEN if user == "admin" else self.tokens[user]
        return {"Authorization": f"token {token}"}

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"jupyter burstlab did not exit within {timeout} s of SIGTERM; log:\n"
                                     + self.log.read_text()[-4000:])
        return self.proc.returncode


def start_service(tmp: Path, *extra: str, hashed_tokens: bool = False) -> Service:
    """The service, its tokens file private (0600), or of digests only (``hashed_tokens``, then 0644)."""
    import requests

    from burstlab.jupyter_ext.auth import hashed

    tmp.mkdir(parents=True, exist_ok=True)
    tokens_file = tmp / "tokens.json"
    tokens_file.touch(mode=0o600)
    tokens_file.chmod(0o600)
    tokens_file.write_text(json.dumps({(hashed(tok) if hashed_tokens else tok): user for user, tok in TOKENS.items()}))
    if hashed_tokens:
        tokens_file.chmod(0o644)
    port = _free_port()
    env = {**os.environ, "BURSTLAB_HOME": str(tmp / "home"), "BURSTLAB_DECLARED_GPUS": "H100:2,A100:1"}
    for name in ("BURSTLAB_URL", "BURSTLAB_TOKEN", "JUPYTER_TOKEN"):
        env.pop(name, None)
    log = tmp / "service.log"
    cmd = [sys.executable, "-m", "burstlab.jupyter_ext", "--port", str(port), "--tokens-file", str(tokens_file),
           f"--IdentityProvider.token={ADMIN_TOKEN}", f"--ServerApp.root_dir={tmp}", "--ServerApp.port_retries=0",
           "--BurstLab.heartbeat_interval=0.5", *extra]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp)
    svc = Service(proc, f"http://127.0.0.1:{port}/burstlab/api", tmp / "home", log, dict(TOKENS))
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter burstlab exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if requests.get(svc.url + "/openapi.json", headers=svc.headers("admin"), timeout=2).status_code == 200:
                return svc
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            svc.stop()
            raise AssertionError(f"jupyter burstlab did not answer within 60 s:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
