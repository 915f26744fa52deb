"""Two notebook processes on one machine share one embedded cluster: the second finds the first's under
BURSTLAB_HOME and leases from the same scheduler, so the only H100 is never held twice."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading

import pytest

import burstlab
from burstlab.errors import CapacityError
from burstlab.examples.fleet import wait_for

pytestmark = pytest.mark.slow

FIRST = textwrap.dedent("""
    import sys
    import burstlab

    ws = burstlab.Workspace(declared_gpus="H100:1", kernel_pool_size=0, notebook="first.ipynb")
    session = ws.session("H100")
    print("HELD", session.execute_sync("import os; os.getpid()").text, flush=True)
    for line in sys.stdin:
        if line.strip() == "release":
            session.stop()
            print("RELEASED", flush=True)
        elif line.strip() == "exit":
            break
    ws.close()
    print("CLOSED", flush=True)
""")


class Notebook:
    """The first notebook: a real Python process with its own workspace, driven line by line."""

    def __init__(self, home: str):
        env = {**os.environ, "BURSTLAB_HOME": home}
        self.proc = subprocess.Popen([sys.executable, "-c", FIRST], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, word: str, timeout: float = 60.0) -> str:
        def check():
            while True:
                try:
                    line = self.lines.get_nowait()
                except queue.Empty:
                    return None
                self.seen.append(line)
                if line.startswith(word):
                    return line
        try:
            return wait_for(f"{word!r} from the first notebook", check, timeout, interval=0.05)
        except TimeoutError:
            raise AssertionError(f"no {word!r}; it said: {self.seen[-30:]}") from None

    def say(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_a_second_notebook_process_joins_the_first_ones_embedded_cluster(tmp_path):
    home = str(tmp_path)
    first = Notebook(home)
    second = third = None
    try:
        first.expect("HELD")
        state = json.loads((tmp_path / "embedded.json").read_text())
        assert state["pid"] == first.proc.pid and oct((tmp_path / "embedded.json").stat().st_mode & 0o777) == "0o600"
        second = burstlab.Workspace(declared_gpus="H100:1", home=home, kernel_pool_size=0, notebook="second.ipynb")
        assert second.client.scheduler.address == state["address"]  # joined, not a second cluster
        assert [(e.type, e.free) for e in second.hosts()] == [("H100", 0)]  # it sees the first's lease
        with pytest.raises(CapacityError):
            second.session("H100")
        first.say("release")
        first.expect("RELEASED")
        session = second.session("H100", wait=30)
        assert session.execute_sync("6 * 7").text == "42"
        session.stop()
        # The first notebook goes: it withdraws its cluster; a notebook started now runs its own.
        first.say("exit")
        first.expect("CLOSED")
        assert first.proc.wait(30) == 0
        assert not (tmp_path / "embedded.json").exists()
        second.close()
        second = None
        third = burstlab.Workspace(declared_gpus="H100:1", home=home, kernel_pool_size=0, notebook="third.ipynb")
        third.client
        assert json.loads((tmp_path / "embedded.json").read_text())["pid"] == os.getpid()
    finally:
        first.stop()
        for ws in (second, third):
            if ws is not None:
                ws.close()


def test_a_notebook_with_other_gpus_does_not_join(tmp_path):
    from burstlab.gpus import discover
    from burstlab.remote_kernel import _shared

    _shared.publish(str(tmp_path), "tls://127.0.0.1:1", _shared.serves(discover("A100:1")))
    assert _shared.find(str(tmp_path), _shared.serves(discover("H100:1"))) is None  # other GPUs
    assert _shared.find(str(tmp_path), _shared.serves(discover("A100:1"))) is None  # this very process's
