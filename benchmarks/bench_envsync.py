"""The environment and files follow the code: sync cost and upload throughput, side by side.

    python benchmarks/bench_envsync.py [--quick] [--size-mib N]

1. new session -> first output, for a notebook that imported 20 small pure-Python packages the host lacks:
   without any check, with the check only, with ``sync`` on a fresh host (the wheels travel), and with
   ``sync`` again on a fresh kernel of the same host (its cache has them: nothing travels);
2. upload of one file (256 MiB, ``--size-mib``) into a session's work directory vs a raw TCP socket copy of the
   same file on the same machine (sender reads the file, receiver writes it): the physical floor here.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2")
os.environ.setdefault("BURSTLAB_HOME", tempfile.mkdtemp(prefix="burstlab-bench-"))

from _common import print_table, row  # noqa: E402


def _packages(root: str, n: int) -> str:
    """``n`` small pure packages (a few modules each), installed by pip into a folder only this process uses."""
    wheels = []
    for i in range(n):
        name, dist_info = f"blbench{i}", f"blbench{i}-1.0.{i}.dist-info"
        files = {f"{name}/__init__.py": f"from .core import VALUE\n",
                 f"{name}/core.py": f"VALUE = {i}\n" + "def f(x):\n    return x + 1\n" * 20,
                 f"{name}/util.py": "import math\n" + f"PI = math.pi * {i}\n" * 50,
                 f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: blbench{i}\nVersion: 1.0.{i}\n",
                 f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
        path = os.path.join(root, f"{name}-1.0.{i}-py3-none-any.whl")
        with zipfile.ZipFile(path, "w") as z:
            for arc, text in files.items():
                z.writestr(arc, text)
            z.writestr(f"{dist_info}/RECORD", "".join(f"{a},,\n" for a in [*files, f"{dist_info}/RECORD"]))
        wheels.append(path)
    site = os.path.join(root, "site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site, *wheels],
                   check=True, capture_output=True)
    return site


def _session_first_output(ws, **prepare_kwargs) -> float:
    from burstlab.remote_kernel.prepare import prepare

    t = time.perf_counter()
    session = ws.session("H100", reuse=False)
    prepare(session, **prepare_kwargs)
    ex = session.execute_sync("import blbench19; blbench19.VALUE" if prepare_kwargs.get("sync") else "1")
    elapsed = time.perf_counter() - t
    assert ex.error is None, ex.error
    session.stop()
    return elapsed


def _raw_socket_copy(src: str, dst: str) -> float:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def receive():
        conn, _ = server.accept()
        with conn, open(dst, "wb") as f:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                f.write(data)

    t = time.perf_counter()
    receiver = threading.Thread(target=receive)
    receiver.start()
    with socket.create_connection(("127.0.0.1", port)) as sock, open(src, "rb") as f:
        sock.sendfile(f)
    receiver.join()
    server.close()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args()
    size = (64 if args.quick else args.size_mib) << 20

    import burstlab
    from burstlab.remote_kernel import files
    from burstlab.remote_kernel.prepare import _checked

    work = tempfile.mkdtemp(prefix="burstlab-bench-env-")
    site = _packages(work, 20)
    sys.path.insert(0, site)
    for i in range(20):
        __import__(f"blbench{i}")

    ws = burstlab.Workspace(notebook="bench-envsync.ipynb")
    try:
        ws.session("H100", reuse=False).stop()  # the worker and its pool are up
        plain = [_session_first_output(ws, check=False) for _ in range(3)]
        _checked.clear()
        checked_first = [_session_first_output(ws, notebook_dir=work)]
        checked_again = [_session_first_output(ws, notebook_dir=work) for _ in range(3)]
        synced_first = [_session_first_output(ws, sync=True, notebook_dir=work)]
        synced_again = [_session_first_output(ws, sync=True, notebook_dir=work) for _ in range(3)]
        print_table("new session -> first output, 20 small pure packages the host lacks", [
            row("no check", plain), row("check, first time (host and environment new)", checked_first),
            row("check, cached", checked_again), row("--sync, fresh host (20 wheels travel)", synced_first),
            row("--sync, same host again (nothing travels)", synced_again)])

        src = os.path.join(work, "blob.bin")
        with open(src, "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
        session = ws.session("H100", reuse=False)
        session.execute_sync(f"import os; os.chdir({tempfile.mkdtemp(prefix='burstlab-bench-host-')!r})")
        ours, floor = [], []
        for _ in range(3 if args.quick else 5):  # interleaved: the machine's load changes from second to second
            session.execute_sync("import os\nfor _f in os.listdir('.'): os.unlink(_f)")
            t = time.perf_counter()
            done = files.upload(session, src)
            ours.append(time.perf_counter() - t)
            assert done.bytes == size
            floor.append(_raw_socket_copy(src, os.path.join(work, "copy.bin")))
        session.stop()
        mib = size / (1 << 20)
        encrypted = os.environ.get("BURSTLAB_ENCRYPT_KERNELS", "1") not in ("0", "false", "no", "off")
        print_table(f"upload of {mib:.0f} MiB (kernel channel {'encrypted' if encrypted else 'in the clear'})", [
            row("burstlab upload (windowed chunks, hashed both sides)", [mib / t for t in ours], unit="MiB/s", scale=1),
            row("raw TCP socket copy (floor)", [mib / t for t in floor], unit="MiB/s", scale=1)])
        ratio = statistics.median(floor) / statistics.median(ours)  # times: floor / ours is ours as a share of the floor
        print(f"- upload throughput: {ratio:.2f}x the raw socket copy (goal >= 0.7x), "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        ws.close()


if __name__ == "__main__":
    main()
