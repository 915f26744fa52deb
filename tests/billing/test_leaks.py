"""Nothing with a secret is left behind, and a map gives its memory back.

Kernel connection files (they hold the key that signs every message) are 0600 in a 0700 directory
while the kernel starts, and removed as soon as it has read them, so no exit path (a stop, a kernel
killed with -9, a worker killed by a map's cancel, a workspace closing) leaves one: the test counts
``burstlab-kernel-*`` directories in a temp directory of its own. And 100 small maps in one
notebook process grow its RSS by less than 5 MiB.
"""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from burstlab.remote_kernel.pool import KernelPool, KernelProcess


def test_a_connection_file_is_private_and_gone_once_the_kernel_has_read_it():
    kernel = KernelProcess("127.0.0.1")
    try:
        assert stat.S_IMODE(os.stat(kernel.dir).st_mode) & 0o777 == 0o700  # (jupyter_client adds the sticky bit)
        assert stat.S_IMODE(os.stat(os.path.join(kernel.dir, "kernel.json")).st_mode) == 0o600
    finally:
        kernel.kill()
    assert not os.path.exists(kernel.dir)
    ready, warm = KernelPool("127.0.0.1", size=0).take()
    try:
        assert not warm and ready.alive() and not os.path.exists(ready.dir)
        ready.run("x = 1")  # it works without the file: the key is in memory
    finally:
        ready.kill()


@pytest.mark.slow
def test_no_kernel_directory_outlives_any_exit_path(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = textwrap.dedent("""
        import glob, os, signal, tempfile, time
        if __name__ == "__main__":
            import burstlab
            from burstlab import fanout
            def leftovers():
                return sorted(glob.glob(os.path.join(os.environ["TMPDIR"], "burstlab-kernel-*")))
            ws = burstlab.Workspace(kernel_pool_size=1, worker_idle_timeout=30, heartbeat_interval=0.5)
            s = ws.session("H100")  # a stop
            assert s.execute_sync("1").error is None
            s.stop("done")
            s = ws.session("H100")  # a kernel killed with -9
            pid = int(s.execute_sync("import os; print(os.getpid())").stdout)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while s.state == "running" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert s.state == "lost", s.state
            def slow(x):
                time.sleep(5)
            try:  # a worker killed by a map's cancel (its pool kernel with it)
                import threading
                t = threading.Thread(target=lambda: fanout.map(slow, range(4), gpu="H100", workspace=ws, progress=False))
                t.daemon = True
                t.start()
                deadline = time.monotonic() + 30
                while not ws.usage(kind="map") and time.monotonic() < deadline:
                    time.sleep(0.05)
                for m in ws.list_maps():
                    ws.cancel_map(m.id if hasattr(m, "id") else m["id"], "leak test")
                t.join(30)
            finally:
                ws.close()
            deadline = time.monotonic() + 15
            while leftovers() and time.monotonic() < deadline:
                time.sleep(0.1)
            print("LEFT", len(leftovers()), leftovers(), flush=True)
    """)
    env = {**os.environ, "TMPDIR": str(tmp), "BURSTLAB_HOME": str(tmp_path / "home"),
           "BURSTLAB_DECLARED_GPUS": "H100:2", "BURSTLAB_NOTEBOOK": "leaks.ipynb"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    left = [line for line in out.stdout.splitlines() if line.startswith("LEFT")]
    assert left == ["LEFT 0 []"], out.stdout + out.stderr[-2000:]


@pytest.mark.slow
def test_a_hundred_maps_give_their_memory_back(tmp_path):
    """The notebook process (its own embedded cluster, in a fresh process so that nothing else
    grows it) runs 100 small maps after a warm-up: its RSS grows by less than 5 MiB."""
    code = textwrap.dedent("""
        import gc, psutil
        if __name__ == "__main__":
            import burstlab
            from burstlab import fanout
            def f(x):
                return x + 1
            ws = burstlab.Workspace(kernel_pool_size=0, worker_idle_timeout=120)
            for _ in range(10):  # warm-up: imports, caches, connection pools
                fanout.map(f, range(10), gpu="H100", workspace=ws, progress=False)
            gc.collect()
            before = psutil.Process().memory_info().rss
            for _ in range(100):
                assert fanout.map(f, range(10), gpu="H100", workspace=ws, progress=False) == list(range(1, 11))
            gc.collect()
            print("GROWTH", psutil.Process().memory_info().rss - before, flush=True)
            ws.close()
    """)
    env = {**os.environ, "BURSTLAB_HOME": str(tmp_path / "home"), "BURSTLAB_DECLARED_GPUS": "H100:2",
           "BURSTLAB_NOTEBOOK": "rss.ipynb"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (growth,) = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("GROWTH")]
    assert growth < 5 * 2**20, f"100 maps kept {growth / 2**20:.1f} MiB of the notebook's memory"
